/* Not a ceiling: fills an SQLite dedup store for dedup-bench's growth rows, fast. It writes N
 * records straight into the store's table (dedup_records, the schema dedup-bench has just created
 * by opening an SQLiteDedupStore on the file) in one transaction, with the rollback journal off and
 * a cache that holds the whole table, then puts the file back in WAL mode. Each row is what the
 * store writes for a completed record: namespace "bench", state 'completed', fencing 1, attempt 1,
 * no owner, no fingerprint, no result. Keys are two 64-bit numbers in hex from the xorshift
 * generator of dedup-bench's KeyGenerator seeded with SEED (so dedup-bench knows which keys are
 * present), inserted in that random order, as claims would fill a store.
 *   live:    completed over the day before NOW_MS, kept for ten years (a file cached under .build/
 *            stays live for the next runs)
 *   expired: completed two days before NOW_MS, expired over the day before it (all to be purged)
 *
 * Build: cc -O2 -o sqlite_fill sqlite_fill.c -lsqlite3
 * Usage: sqlite_fill DBPATH N SEED live|expired NOW_MS
 * Prints one line: "sqlite fill records=.. seconds=.." */
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static void die(sqlite3 *db, const char *what) { fprintf(stderr, "%s: %s\n", what, sqlite3_errmsg(db)); exit(1); }
static void exec(sqlite3 *db, const char *sql) { if (sqlite3_exec(db, sql, 0, 0, 0) != SQLITE_OK) die(db, sql); }

int main(int argc, char **argv) {
  if (argc != 6) { fprintf(stderr, "usage: %s DBPATH N SEED live|expired NOW_MS\n", argv[0]); return 2; }
  const char *path = argv[1];
  long long n = atoll(argv[2]);
  uint64_t seed = strtoull(argv[3], 0, 0);
  int expired = strcmp(argv[4], "expired") == 0;
  if (!expired && strcmp(argv[4], "live") != 0) { fprintf(stderr, "the kind is live or expired\n"); return 2; }
  long long now_ms = atoll(argv[5]);
  const long long day = 86400000LL;
  if (seed == 0) seed = 0x9E3779B97F4A7C15ull;

  sqlite3 *db;
  if (sqlite3_open(path, &db) != SQLITE_OK) die(db, "open");
  exec(db, "PRAGMA journal_mode=OFF");
  exec(db, "PRAGMA synchronous=OFF");
  exec(db, "PRAGMA cache_size=-4000000"); /* KiB: the whole table stays in memory until the commit */
  sqlite3_stmt *ins;
  if (sqlite3_prepare_v2(db,
                         "INSERT INTO dedup_records(namespace, key, state, owner_token, fencing, attempt, created_at, "
                         "lease_until, completed_at, expires_at, fingerprint, result, owner_label, broker_ms) "
                         "VALUES('bench', ?1, 'completed', NULL, 1, 1, ?2, NULL, ?2, ?3, NULL, NULL, NULL, NULL)",
                         -1, &ins, 0) != SQLITE_OK) die(db, "prepare");
  double t0 = now();
  exec(db, "BEGIN");
  char key[40];
  for (long long i = 0; i < n; i++) {
    uint64_t k[2];
    for (int j = 0; j < 2; j++) { seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17; k[j] = seed; }
    snprintf(key, sizeof key, "%016llx-%016llx", (unsigned long long)k[0], (unsigned long long)k[1]);
    long long completed = now_ms - (expired ? 2 : 1) * day + i * day / n;
    long long expires = expired ? completed + day - 1 : completed + 3650 * day;
    sqlite3_bind_text(ins, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(ins, 2, completed);
    sqlite3_bind_int64(ins, 3, expires);
    if (sqlite3_step(ins) != SQLITE_DONE) die(db, "insert");
    sqlite3_reset(ins);
  }
  exec(db, "COMMIT");
  sqlite3_finalize(ins);
  exec(db, "PRAGMA journal_mode=WAL");
  if (sqlite3_close(db) != SQLITE_OK) die(db, "close");
  printf("sqlite fill records=%lld seconds=%.1f\n", n, now() - t0);
  return 0;
}
