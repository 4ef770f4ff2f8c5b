"""Cloud service: verified ingest, storage, reports, settlement and renewal packages."""
