//! The Raft log store in PostgreSQL (being built).
