/* Not a ceiling: the SQL of SQLiteDedupStore from a plain C client, on a store file of the store's
 * own schema (one already holding millions of records, or an empty one). dedup-bench's growth
 * group runs it on the grown store and on an empty one beside our passes, to tell what a big file
 * costs SQLite itself from what it costs our library.
 *
 * Per message, as the store's single-message path does it in autocommit: read the row (SELECT),
 * and when it is absent upsert it in flight (INSERT .. ON CONFLICT DO UPDATE .. RETURNING), then
 * complete it (an owner-checked UPDATE). With MODE batch, as the store's batch path: the reads and
 * upserts (without RETURNING) of 100 messages in one BEGIN IMMEDIATE transaction, then their
 * completions in a second one. The statements are the store's (Sources/DedupSQLite/Connection.swift).
 * A second pass over the same keys measures duplicates (the read finds a completed row).
 * Keys are two 64-bit numbers in hex from the xorshift generator of dedup-bench's KeyGenerator
 * seeded with SEED (new keys: a seed the fill did not use).
 *
 * Build: cc -O2 -o sqlite_store_sql sqlite_store_sql.c -lsqlite3
 * Usage: sqlite_store_sql DBPATH N SEED single|batch
 * Prints one line per pass: "sqlite mode=store-single|store-batch pass=unique|duplicate n=.. msgs_per_s=.." */
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static void die(sqlite3 *db, const char *what) { fprintf(stderr, "%s: %s\n", what, sqlite3_errmsg(db)); exit(1); }
static void exec(sqlite3 *db, const char *sql) { if (sqlite3_exec(db, sql, 0, 0, 0) != SQLITE_OK) die(db, sql); }
static long long wall_ms(void) { struct timespec t; clock_gettime(CLOCK_REALTIME, &t); return t.tv_sec * 1000LL + t.tv_nsec / 1000000; }

#define UPSERT \
  "INSERT INTO dedup_records (namespace, key, state, owner_token, fencing, attempt, created_at, " \
  "lease_until, completed_at, expires_at, fingerprint, result, owner_label, broker_ms) " \
  "VALUES (?1, ?2, 'in_flight', ?3, 1, 1, ?4, ?5, NULL, ?6, ?7, NULL, ?8, ?9) " \
  "ON CONFLICT (namespace, key) DO UPDATE SET " \
  "state = 'in_flight', owner_token = excluded.owner_token, owner_label = excluded.owner_label, " \
  "fencing = CASE WHEN expires_at <= ?4 THEN 1 ELSE fencing + 1 END, " \
  "attempt = CASE WHEN expires_at <= ?4 THEN 1 ELSE attempt + 1 END, " \
  "created_at = CASE WHEN expires_at <= ?4 THEN excluded.created_at ELSE created_at END, " \
  "broker_ms = CASE WHEN expires_at <= ?4 THEN excluded.broker_ms ELSE broker_ms END, " \
  "lease_until = excluded.lease_until, completed_at = NULL, expires_at = excluded.expires_at, " \
  "fingerprint = CASE WHEN expires_at <= ?4 THEN excluded.fingerprint ELSE coalesce(fingerprint, excluded.fingerprint) END, " \
  "result = NULL " \
  "WHERE expires_at <= ?4 OR (state = 'in_flight' AND lease_until <= ?4 AND NOT " \
  "(fingerprint IS NOT NULL AND excluded.fingerprint IS NOT NULL AND fingerprint <> excluded.fingerprint))"

static sqlite3 *db;
static sqlite3_stmt *sel, *ups, *ups_returning, *com, *beg, *commit;

static void step_done(sqlite3_stmt *s) { int rc; while ((rc = sqlite3_step(s)) == SQLITE_ROW) {} if (rc != SQLITE_DONE) die(db, "step"); sqlite3_reset(s); }

/* The read; 1 when a live completed row answers (a duplicate). */
static int read_row(const char *key, long long t) {
  sqlite3_bind_text(sel, 1, "bench", -1, SQLITE_STATIC);
  sqlite3_bind_text(sel, 2, key, -1, SQLITE_STATIC);
  int found = 0;
  int rc = sqlite3_step(sel);
  if (rc == SQLITE_ROW) found = sqlite3_column_int64(sel, 7) > t && sqlite3_column_text(sel, 0)[0] == 'c';
  else if (rc != SQLITE_DONE) die(db, "select");
  sqlite3_reset(sel);
  return found;
}

static void upsert(sqlite3_stmt *s, const char *key, long long t) {
  sqlite3_bind_text(s, 1, "bench", -1, SQLITE_STATIC);
  sqlite3_bind_text(s, 2, key, -1, SQLITE_STATIC);
  sqlite3_bind_text(s, 3, "owner-token-0123456789abcdef", -1, SQLITE_STATIC);
  sqlite3_bind_int64(s, 4, t);
  sqlite3_bind_int64(s, 5, t + 30000);
  sqlite3_bind_int64(s, 6, t + 30000 + 86400000);
  sqlite3_bind_null(s, 7);
  sqlite3_bind_text(s, 8, "bench-host:1", -1, SQLITE_STATIC);
  sqlite3_bind_null(s, 9);
  step_done(s);
}

static void complete(const char *key, long long t) {
  sqlite3_bind_text(com, 1, "bench", -1, SQLITE_STATIC);
  sqlite3_bind_text(com, 2, key, -1, SQLITE_STATIC);
  sqlite3_bind_text(com, 3, "owner-token-0123456789abcdef", -1, SQLITE_STATIC);
  sqlite3_bind_int64(com, 4, t);
  sqlite3_bind_int64(com, 5, t + 86400000);
  sqlite3_bind_null(com, 6);
  step_done(com);
  if (sqlite3_changes(db) != 1) die(db, "complete changed no row");
}

int main(int argc, char **argv) {
  if (argc != 5) { fprintf(stderr, "usage: %s DBPATH N SEED single|batch\n", argv[0]); return 2; }
  int n = atoi(argv[2]);
  uint64_t seed = strtoull(argv[3], 0, 0);
  if (seed == 0) seed = 0x9E3779B97F4A7C15ull;
  int batch = strcmp(argv[4], "batch") == 0 ? 100 : 1;
  if (batch == 1 && strcmp(argv[4], "single") != 0) { fprintf(stderr, "the mode is single or batch\n"); return 2; }
  if (sqlite3_open(argv[1], &db) != SQLITE_OK) die(db, "open");
  exec(db, "PRAGMA synchronous=NORMAL");
  exec(db, "PRAGMA busy_timeout=5000");
  if (sqlite3_prepare_v3(db, "SELECT state, owner_token, fencing, attempt, created_at, lease_until, completed_at, expires_at, "
                         "fingerprint, result, owner_label, broker_ms FROM dedup_records WHERE namespace = ?1 AND key = ?2",
                         -1, SQLITE_PREPARE_PERSISTENT, &sel, 0)) die(db, "prepare");
  if (sqlite3_prepare_v3(db, UPSERT, -1, SQLITE_PREPARE_PERSISTENT, &ups, 0)) die(db, "prepare");
  if (sqlite3_prepare_v3(db, UPSERT " RETURNING fencing, attempt, created_at", -1, SQLITE_PREPARE_PERSISTENT, &ups_returning, 0)) die(db, "prepare");
  if (sqlite3_prepare_v3(db, "UPDATE dedup_records SET state = 'completed', owner_token = NULL, owner_label = NULL, lease_until = NULL, "
                         "completed_at = ?4, expires_at = ?5, result = ?6 WHERE namespace = ?1 AND key = ?2 AND owner_token = ?3 "
                         "AND state = 'in_flight' AND expires_at > ?4", -1, SQLITE_PREPARE_PERSISTENT, &com, 0)) die(db, "prepare");
  if (sqlite3_prepare_v3(db, "BEGIN IMMEDIATE", -1, SQLITE_PREPARE_PERSISTENT, &beg, 0)) die(db, "prepare");
  if (sqlite3_prepare_v3(db, "COMMIT", -1, SQLITE_PREPARE_PERSISTENT, &commit, 0)) die(db, "prepare");

  char (*keys)[40] = malloc((size_t)n * 40);
  for (int i = 0; i < n; i++) {
    uint64_t k[2];
    for (int j = 0; j < 2; j++) { seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17; k[j] = seed; }
    snprintf(keys[i], 40, "%016llx-%016llx", (unsigned long long)k[0], (unsigned long long)k[1]);
  }
  int *claimed = malloc(sizeof(int) * batch);
  for (int pass = 0; pass < 2; pass++) {
    long long t = wall_ms();
    long total = 0;
    double t0 = now();
    for (int i = 0; i < n; i += batch) {
      int m = i + batch <= n ? batch : n - i;
      if (batch == 1) {
        if (read_row(keys[i], t)) continue;
        upsert(ups_returning, keys[i], t);
        complete(keys[i], t);
        total++;
        continue;
      }
      step_done(beg);
      int any = 0;
      for (int j = 0; j < m; j++) {
        claimed[j] = !read_row(keys[i + j], t);
        if (claimed[j]) { upsert(ups, keys[i + j], t); any = 1; }
      }
      step_done(commit);
      if (!any) continue;
      step_done(beg);
      for (int j = 0; j < m; j++) if (claimed[j]) { complete(keys[i + j], t); total++; }
      step_done(commit);
    }
    double dt = now() - t0;
    if (total != (pass ? 0 : n)) { fprintf(stderr, "pass %d claimed %ld of %d\n", pass, total, n); return 1; }
    printf("sqlite mode=store-%s pass=%s n=%d claimed=%ld msgs_per_s=%.0f\n", argv[4], pass ? "duplicate" : "unique", n, total, n / dt);
    fflush(stdout);
  }
  sqlite3_finalize(sel); sqlite3_finalize(ups); sqlite3_finalize(ups_returning); sqlite3_finalize(com);
  sqlite3_finalize(beg); sqlite3_finalize(commit);
  if (sqlite3_close(db) != SQLITE_OK) die(db, "close");
  free(keys); free(claimed);
  return 0;
}
