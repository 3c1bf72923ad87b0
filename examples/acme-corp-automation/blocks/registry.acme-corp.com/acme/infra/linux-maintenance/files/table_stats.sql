-- table_checksum: row-hash/2
-- Every table's row count and content checksum, computed by PostgreSQL in one statement (no function is
-- created: it runs inside a read-only transaction, in the snapshot pg_dump dumps). One line per table:
-- schema.table <TAB> rows <TAB> checksum. The checksum is the md5 of the sum of a 64-bit hash of every row
-- (hash_record_extended over the row's values): it does not depend on row order, and a changed, added or
-- lost row changes it. Columns are hashed by their type's own hash function where the type (a base type)
-- has one, which needs no text conversion (about a fifth of the CPU of hashing each row's text); columns
-- of other types (arrays, enums, domains, composites, geometric types, json, ...) are hashed as their text,
-- collatable ones under the "C" collation, so equal-under-a-collation strings still differ. The first line
-- names this checksum; the backup records it in the manifest, and the restore drill checks it computes the
-- same kind. The settings make the text form of dates, times, floats and bytea the same in every session.
SET LOCAL DateStyle = 'ISO, MDY';
SET LOCAL TimeZone = 'UTC';
SET LOCAL IntervalStyle = 'postgres';
SET LOCAL extra_float_digits = 3;
SET LOCAL bytea_output = 'hex';
WITH tables AS (
    SELECT c.oid, n.nspname, c.relname
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'r'
      AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%'
      -- tables of extensions: pg_dump does not dump their rows
      AND NOT EXISTS (SELECT 1 FROM pg_depend d
                      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
), columns AS (
    SELECT t.oid, string_agg(
        CASE WHEN ty.typtype = 'b' AND EXISTS (
                 SELECT 1 FROM pg_opclass oc
                 JOIN pg_am am ON am.oid = oc.opcmethod AND am.amname = 'hash'
                 JOIN pg_amproc ap ON ap.amprocfamily = oc.opcfamily AND ap.amprocnum = 2
                                  AND ap.amproclefttype = oc.opcintype AND ap.amprocrighttype = oc.opcintype
                 WHERE oc.opcdefault AND oc.opcintype = a.atttypid)
             THEN format('r.%I', a.attname) || CASE WHEN a.attcollation <> 0 THEN ' COLLATE "C"' ELSE '' END
             ELSE format('r.%I::text COLLATE "C"', a.attname)
        END, ', ' ORDER BY a.attnum) AS expr
    FROM tables t
    JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
    JOIN pg_type ty ON ty.oid = a.atttypid
    GROUP BY t.oid
), measured AS (
    SELECT nspname, relname, query_to_xml(format(
        'SELECT count(*) AS n, md5(coalesce(sum(hash_record_extended(ROW(%s0), 0)), 0)::text) AS s FROM %I.%I r',
        coalesce(c.expr || ', ', ''), nspname, relname), false, true, '') AS x
    FROM tables t
    LEFT JOIN columns c ON c.oid = t.oid
)
SELECT format('%I.%I', nspname, relname),
       (xpath('/row/n/text()', x))[1]::text,
       (xpath('/row/s/text()', x))[1]::text
FROM measured
ORDER BY 1;
