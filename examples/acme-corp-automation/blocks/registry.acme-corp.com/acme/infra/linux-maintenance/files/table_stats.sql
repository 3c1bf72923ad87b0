-- Every table's row count and content checksum, computed by PostgreSQL in one statement (no function is
-- created: it runs inside a read-only transaction, in the snapshot pg_dump dumps). One line per table:
-- schema.table <TAB> rows <TAB> checksum. The checksum is the md5 of the sum of the first 64 bits of the
-- md5 of each row's text form: it does not depend on row order, and a changed, added or lost row changes
-- it. The settings make the text form of dates, times, floats and bytea the same in every session.
SET LOCAL DateStyle = 'ISO, MDY';
SET LOCAL TimeZone = 'UTC';
SET LOCAL IntervalStyle = 'postgres';
SET LOCAL extra_float_digits = 3;
SET LOCAL bytea_output = 'hex';
WITH tables AS (
    SELECT n.nspname, c.relname
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'r'
      AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%'
      -- tables of extensions: pg_dump does not dump their rows
      AND NOT EXISTS (SELECT 1 FROM pg_depend d
                      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
), measured AS (
    SELECT nspname, relname, query_to_xml(format(
        'SELECT count(*) AS n, md5(coalesce(sum((''x'' || left(md5(ROW(r.*)::text), 16))::bit(64)::bigint::numeric), 0)::text) AS s FROM %I.%I r',
        nspname, relname), false, true, '') AS x
    FROM tables
)
SELECT format('%I.%I', nspname, relname),
       (xpath('/row/n/text()', x))[1]::text,
       (xpath('/row/s/text()', x))[1]::text
FROM measured
ORDER BY 1;
