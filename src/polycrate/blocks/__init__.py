"""Blocks as packages: the OCI registry client, the block store on disk, checksums."""
