#ifndef DEDUP_CSQLITE_SHIM_H
#define DEDUP_CSQLITE_SHIM_H
#include <sqlite3.h>

/* SQLITE_TRANSIENT is a cast macro Swift cannot import: SQLite copies the bound bytes. */
static inline sqlite3_destructor_type dedup_sqlite_transient(void) { return SQLITE_TRANSIENT; }
/* SQLITE_STATIC: the bytes stay valid until the statement is reset, so no copy. */
static inline sqlite3_destructor_type dedup_sqlite_static(void) { return SQLITE_STATIC; }

#endif
