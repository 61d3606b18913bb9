/* Not a ceiling: an experiment on what a grown SQLite store costs claims, per layout and setting.
 * The claim SQL of SQLiteDedupStore (as in sqlite_store_sql.c: single-message claims in autocommit,
 * batches of 100 in two BEGIN IMMEDIATE transactions; new keys, then the same keys again as
 * duplicates) on the store's schema or on alternative layouts, to compare a store holding millions
 * of completed records with an empty one (run both in the same session, interleaved, and compare ratios).
 *   store    the store's table (dedup_records, WITHOUT ROWID, PRIMARY KEY (namespace, key))
 *   hash     a rowid table keyed by a 64-bit hash of namespace and key (INTEGER PRIMARY KEY), the
 *            full key in the row and checked on every read (a collision aborts here; a store would
 *            need a side table for it)
 *   rowid    a rowid table with a unique index on (namespace, key)
 *   parts:K  K tables of the store's schema, a key's table chosen by its hash
 *   time:K   K tables of the store's schema as time partitions: the fill spreads its rows over them
 *            in order, claims insert into the newest, reads look from the newest to the oldest
 * Environment (run): MMAP (mmap_size), CACHE (cache_size), CKPT (checkpoint threshold in pages,
 * default 1000; 0: none), BG=1 (checkpoint on a second connection in a thread, passive passes then
 * a restart, as the store's CheckpointTrigger; inline past 16 times the threshold), SYNC (a
 * diagnostic only: the store uses NORMAL), WARM=1 (read every row first), DUPS=1 (the keys are
 * already present: both passes are duplicate reads). Fill: PAGE (page_size).
 * Keys: two 64-bit numbers in hex from dedup-bench's xorshift KeyGenerator seeded with SEED.
 *
 * Build: cc -O2 -o sqlite_growth_layouts sqlite_growth_layouts.c -lsqlite3 -lpthread
 * Usage: sqlite_growth_layouts fill DBPATH N SEED LAYOUT        (N = 0: the empty schema)
 *        sqlite_growth_layouts run  DBPATH N SEED single|batch LAYOUT
 * run prints "NEW_PER_S DUPLICATE_PER_S NEW_PER_S_BESIDES_CHECKPOINTS DUPLICATE_PER_S_BESIDES_CHECKPOINTS"
 * (the last two leave out the time of checkpoints run inside a commit). */
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <pthread.h>
#include <unistd.h>
#define MAXK 64 /* at most this many tables */

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static sqlite3 *db;
static void die(const char *what) { fprintf(stderr, "%s: %s\n", what, sqlite3_errmsg(db)); exit(1); }
static void exec(const char *sql) { if (sqlite3_exec(db, sql, 0, 0, 0) != SQLITE_OK) die(sql); }
static long long wall_ms(void) { struct timespec t; clock_gettime(CLOCK_REALTIME, &t); return t.tv_sec * 1000LL + t.tv_nsec / 1000000; }

enum { STORE, HASH, PARTS, TIMEP, ROWID } layout;
static int K = 1;
static const char *tn(int i) { static char b[MAXK][32]; if (layout == STORE) return "dedup_records"; snprintf(b[i], 32, "t%d", i); return b[i]; }

static uint64_t hash64(const char *ns, const char *key) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (const char *p = ns; *p; p++) { h ^= (unsigned char)*p; h *= 0x100000001b3ull; }
  h ^= 0xff; h *= 0x100000001b3ull;
  for (const char *p = key; *p; p++) { h ^= (unsigned char)*p; h *= 0x100000001b3ull; }
  h ^= h >> 33; h *= 0xff51afd7ed558ccdull; h ^= h >> 33; h *= 0xc4ceb9fe1a85ec53ull; h ^= h >> 33;
  return h;
}

#define COLS "state TEXT NOT NULL CHECK (state IN ('in_flight', 'completed')), owner_token TEXT, fencing INTEGER NOT NULL, " \
  "attempt INTEGER NOT NULL, created_at INTEGER NOT NULL, lease_until INTEGER, completed_at INTEGER, expires_at INTEGER NOT NULL, " \
  "fingerprint TEXT, result BLOB, owner_label TEXT, broker_ms INTEGER, " \
  "CHECK (CASE state WHEN 'in_flight' THEN owner_token IS NOT NULL AND lease_until IS NOT NULL AND completed_at IS NULL " \
  "ELSE owner_token IS NULL AND lease_until IS NULL AND completed_at IS NOT NULL END)"

static void create_tables(void) {
  char sql[2048];
  if (layout == HASH) {
    snprintf(sql, sizeof sql, "CREATE TABLE IF NOT EXISTS t0 (id INTEGER PRIMARY KEY, namespace TEXT NOT NULL, key TEXT NOT NULL, " COLS ")");
    exec(sql);
    return;
  }
  if (layout == ROWID) {
    exec("CREATE TABLE IF NOT EXISTS t0 (namespace TEXT NOT NULL, key TEXT NOT NULL, " COLS ", UNIQUE (namespace, key))");
    return;
  }
  for (int i = 0; i < K; i++) {
    snprintf(sql, sizeof sql, "CREATE TABLE IF NOT EXISTS %.31s (namespace TEXT NOT NULL, key TEXT NOT NULL, " COLS
             ", PRIMARY KEY (namespace, key)) WITHOUT ROWID", tn(i));
    exec(sql);
  }
}

#define UPSERT_SET \
  "state = 'in_flight', owner_token = excluded.owner_token, owner_label = excluded.owner_label, " \
  "fencing = CASE WHEN expires_at <= ?4 THEN 1 ELSE fencing + 1 END, " \
  "attempt = CASE WHEN expires_at <= ?4 THEN 1 ELSE attempt + 1 END, " \
  "created_at = CASE WHEN expires_at <= ?4 THEN excluded.created_at ELSE created_at END, " \
  "broker_ms = CASE WHEN expires_at <= ?4 THEN excluded.broker_ms ELSE broker_ms END, " \
  "lease_until = excluded.lease_until, completed_at = NULL, expires_at = excluded.expires_at, " \
  "fingerprint = CASE WHEN expires_at <= ?4 THEN excluded.fingerprint ELSE coalesce(fingerprint, excluded.fingerprint) END, " \
  "result = NULL " \
  "WHERE (expires_at <= ?4 OR (state = 'in_flight' AND lease_until <= ?4 AND NOT " \
  "(fingerprint IS NOT NULL AND excluded.fingerprint IS NOT NULL AND fingerprint <> excluded.fingerprint)))"
#define SELCOLS "state, owner_token, fencing, attempt, created_at, lease_until, completed_at, expires_at, fingerprint, result, owner_label, broker_ms"

static sqlite3_stmt *sel[MAXK], *ups[MAXK], *upsr[MAXK], *com[MAXK], *beg, *commit;

static void prep(sqlite3_stmt **s, const char *sql) { if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, s, 0)) die(sql); }

static void prepare_all(void) {
  char sql[4096];
  for (int i = 0; i < K; i++) {
    if (layout == HASH) {
      /* the row of the key's hash; a different key there is a collision (handled by a side table in a real store) */
      prep(&sel[i], "SELECT " SELCOLS ", namespace, key FROM t0 WHERE id = ?10");
      snprintf(sql, sizeof sql, "INSERT INTO t0 (id, namespace, key, state, owner_token, fencing, attempt, created_at, "
               "lease_until, completed_at, expires_at, fingerprint, result, owner_label, broker_ms) "
               "VALUES (?10, ?1, ?2, 'in_flight', ?3, 1, 1, ?4, ?5, NULL, ?6, ?7, NULL, ?8, ?9) "
               "ON CONFLICT (id) DO UPDATE SET " UPSERT_SET " AND namespace = excluded.namespace AND key = excluded.key");
      prep(&ups[i], sql);
      strcat(sql, " RETURNING fencing, attempt, created_at");
      prep(&upsr[i], sql);
      prep(&com[i], "UPDATE t0 SET state = 'completed', owner_token = NULL, owner_label = NULL, lease_until = NULL, "
           "completed_at = ?4, expires_at = ?5, result = ?6 WHERE id = ?10 AND namespace = ?1 AND key = ?2 AND owner_token = ?3 "
           "AND state = 'in_flight' AND expires_at > ?4");
      continue;
    }
    snprintf(sql, sizeof sql, "SELECT " SELCOLS " FROM %s WHERE namespace = ?1 AND key = ?2", tn(i));
    prep(&sel[i], sql);
    snprintf(sql, sizeof sql, "INSERT INTO %s (namespace, key, state, owner_token, fencing, attempt, created_at, "
             "lease_until, completed_at, expires_at, fingerprint, result, owner_label, broker_ms) "
             "VALUES (?1, ?2, 'in_flight', ?3, 1, 1, ?4, ?5, NULL, ?6, ?7, NULL, ?8, ?9) "
             "ON CONFLICT (namespace, key) DO UPDATE SET " UPSERT_SET, tn(i));
    prep(&ups[i], sql);
    strcat(sql, " RETURNING fencing, attempt, created_at");
    prep(&upsr[i], sql);
    snprintf(sql, sizeof sql, "UPDATE %s SET state = 'completed', owner_token = NULL, owner_label = NULL, lease_until = NULL, "
             "completed_at = ?4, expires_at = ?5, result = ?6 WHERE namespace = ?1 AND key = ?2 AND owner_token = ?3 "
             "AND state = 'in_flight' AND expires_at > ?4", tn(i));
    prep(&com[i], sql);
  }
  prep(&beg, "BEGIN IMMEDIATE");
  prep(&commit, "COMMIT");
}

static void step_done(sqlite3_stmt *s) { int rc; while ((rc = sqlite3_step(s)) == SQLITE_ROW) {} if (rc != SQLITE_DONE) die("step"); sqlite3_reset(s); }

static int part_of(const char *key) { return layout == PARTS ? (int)(hash64("bench", key) % (uint64_t)K) : 0; }
static int ins_part(const char *key) { return layout == TIMEP ? K - 1 : part_of(key); }

static int read_one(sqlite3_stmt *s, const char *key, long long t, int *present) {
  sqlite3_bind_text(s, 1, "bench", -1, SQLITE_STATIC);
  sqlite3_bind_text(s, 2, key, -1, SQLITE_STATIC);
  if (layout == HASH) sqlite3_bind_int64(s, 10, (sqlite3_int64)hash64("bench", key));
  int found = 0;
  int rc = sqlite3_step(s);
  if (rc == SQLITE_ROW) {
    if (layout == HASH && strcmp((const char *)sqlite3_column_text(s, 13), key) != 0) { fprintf(stderr, "collision\n"); exit(1); }
    *present = 1;
    found = sqlite3_column_int64(s, 7) > t && sqlite3_column_text(s, 0)[0] == 'c';
  } else if (rc != SQLITE_DONE) die("select");
  sqlite3_reset(s);
  return found;
}

/* 1 when a live completed row answers (a duplicate); time partitions: newest first, until found */
static int read_row(const char *key, long long t) {
  int present = 0;
  if (layout == TIMEP) {
    for (int p = K - 1; p >= 0; p--) { int f = read_one(sel[p], key, t, &present); if (present) return f; }
    return 0;
  }
  return read_one(sel[part_of(key)], key, t, &present);
}

static void upsert(sqlite3_stmt **ss, const char *key, long long t) {
  sqlite3_stmt *s = ss[ins_part(key)];
  sqlite3_bind_text(s, 1, "bench", -1, SQLITE_STATIC);
  sqlite3_bind_text(s, 2, key, -1, SQLITE_STATIC);
  sqlite3_bind_text(s, 3, "owner-token-0123456789abcdef", -1, SQLITE_STATIC);
  sqlite3_bind_int64(s, 4, t);
  sqlite3_bind_int64(s, 5, t + 30000);
  sqlite3_bind_int64(s, 6, t + 30000 + 86400000);
  sqlite3_bind_null(s, 7);
  sqlite3_bind_text(s, 8, "bench-host:1", -1, SQLITE_STATIC);
  sqlite3_bind_null(s, 9);
  if (layout == HASH) sqlite3_bind_int64(s, 10, (sqlite3_int64)hash64("bench", key));
  step_done(s);
}

static void complete(const char *key, long long t) {
  sqlite3_stmt *s = com[ins_part(key)];
  sqlite3_bind_text(s, 1, "bench", -1, SQLITE_STATIC);
  sqlite3_bind_text(s, 2, key, -1, SQLITE_STATIC);
  sqlite3_bind_text(s, 3, "owner-token-0123456789abcdef", -1, SQLITE_STATIC);
  sqlite3_bind_int64(s, 4, t);
  sqlite3_bind_int64(s, 5, t + 86400000);
  sqlite3_bind_null(s, 6);
  if (layout == HASH) sqlite3_bind_int64(s, 10, (sqlite3_int64)hash64("bench", key));
  step_done(s);
  if (sqlite3_changes(db) != 1) die("complete changed no row");
}

static void parse_layout(const char *l) {
  if (!strcmp(l, "store")) layout = STORE;
  else if (!strcmp(l, "hash")) layout = HASH;
  else if (!strcmp(l, "rowid")) layout = ROWID;
  else if (!strncmp(l, "parts:", 6)) { layout = PARTS; K = atoi(l + 6); }
  else if (!strncmp(l, "time:", 5)) { layout = TIMEP; K = atoi(l + 5); }
  else { fprintf(stderr, "layout?\n"); exit(2); }
  if (K < 1 || K > MAXK) exit(2);
}

static void gen(uint64_t *seed, char *out) {
  uint64_t k[2];
  for (int j = 0; j < 2; j++) { *seed ^= *seed << 13; *seed ^= *seed >> 7; *seed ^= *seed << 17; k[j] = *seed; }
  snprintf(out, 40, "%016llx-%016llx", (unsigned long long)k[0], (unsigned long long)k[1]);
}

static double ckpt_s; static int ckpt_pages;
/* background checkpoint as the store's CheckpointTrigger: passive pass(es), then restart, on another thread */
static int bg; static const char *dbpath; static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER; static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int pending, stop, cur_pages, bg_runs, inline_runs;
static int polls_handler(void *a, int n) { (void)a; usleep(100); return n < 200; }
static void *bg_main(void *a) { (void)a;
  sqlite3 *c; if (sqlite3_open(dbpath, &c)) exit(1);
  sqlite3_exec(c, "PRAGMA synchronous=NORMAL", 0, 0, 0);
  for (;;) {
    pthread_mutex_lock(&mu); while (!pending && !stop) pthread_cond_wait(&cv, &mu); int st = stop; pthread_mutex_unlock(&mu);
    if (st) break;
    int ok = 1;
    for (int pass = 1; pass <= 4; pass++) {
      int logf = -1, copied = -1;
      sqlite3_wal_checkpoint_v2(c, 0, SQLITE_CHECKPOINT_PASSIVE, &logf, &copied);
      if (logf < 0 || copied != logf) { ok = 0; break; }
      if (__atomic_load_n(&cur_pages, __ATOMIC_RELAXED) - logf <= ckpt_pages / 4) break;
    }
    if (ok) { sqlite3_busy_handler(c, polls_handler, 0); sqlite3_wal_checkpoint_v2(c, 0, SQLITE_CHECKPOINT_RESTART, 0, 0); sqlite3_busy_timeout(c, 5000); }
    bg_runs++;
    pthread_mutex_lock(&mu); pending = 0; pthread_mutex_unlock(&mu);
  }
  sqlite3_close(c); return 0;
}
static int walhook(void *a, sqlite3 *d, const char *name, int pages) { (void)a;
  if (bg) {
    __atomic_store_n(&cur_pages, pages, __ATOMIC_RELAXED);
    if (pages >= ckpt_pages * 16) { double t0 = now(); sqlite3_wal_checkpoint_v2(d, name, SQLITE_CHECKPOINT_PASSIVE, 0, 0); ckpt_s += now() - t0; inline_runs++; return SQLITE_OK; }
    if (pages >= ckpt_pages) { pthread_mutex_lock(&mu); if (!pending) { pending = 1; pthread_cond_signal(&cv); } pthread_mutex_unlock(&mu); }
    return SQLITE_OK;
  }
  if (pages >= ckpt_pages) { double t0 = now(); sqlite3_wal_checkpoint_v2(d, name, SQLITE_CHECKPOINT_PASSIVE, 0, 0); ckpt_s += now() - t0; }
  return SQLITE_OK;
}
static void settings(void) {
  char sql[200];
  const char *e;
  exec("PRAGMA synchronous=NORMAL");
  exec("PRAGMA busy_timeout=5000");
  if ((e = getenv("MMAP")) && *e) { snprintf(sql, sizeof sql, "PRAGMA mmap_size=%s", e); exec(sql); }
  if ((e = getenv("CACHE")) && *e) { snprintf(sql, sizeof sql, "PRAGMA cache_size=%s", e); exec(sql); }
  if ((e = getenv("CKPT")) && *e) { snprintf(sql, sizeof sql, "PRAGMA wal_autocheckpoint=%s", e); exec(sql); }
  ckpt_pages = 1000; if ((e = getenv("CKPT")) && *e) ckpt_pages = atoi(e);
  if (ckpt_pages > 0) sqlite3_wal_hook(db, walhook, 0);
  if ((e = getenv("BG")) && *e) { bg = 1; pthread_t th; pthread_create(&th, 0, bg_main, 0); pthread_detach(th); }
  if ((e = getenv("SYNC")) && *e) { snprintf(sql, sizeof sql, "PRAGMA synchronous=%s", e); exec(sql); }
}

int main(int argc, char **argv) {
  if (argc < 6) { fprintf(stderr, "usage\n"); return 2; }
  int fill = !strcmp(argv[1], "fill");
  const char *path = argv[2];
  long long n = atoll(argv[3]);
  uint64_t seed = strtoull(argv[4], 0, 0);
  if (seed == 0) seed = 0x9E3779B97F4A7C15ull;
  if (sqlite3_open(path, &db) != SQLITE_OK) die("open");
  if (fill) {
    parse_layout(argv[5]);
    const char *e = getenv("PAGE");
    char sql[200];
    if (e && *e) { snprintf(sql, sizeof sql, "PRAGMA page_size=%s", e); exec(sql); }
    exec("PRAGMA journal_mode=OFF"); exec("PRAGMA synchronous=OFF"); exec("PRAGMA cache_size=-6000000");
    create_tables();
    if (n == 0) { exec("PRAGMA journal_mode=WAL"); sqlite3_close(db); return 0; }
    sqlite3_stmt *ins[MAXK];
    for (int i = 0; i < K; i++) {
      if (layout == HASH) snprintf(sql, sizeof sql, "INSERT INTO t0 (id, namespace, key, state, fencing, attempt, created_at, completed_at, expires_at) VALUES (?4, 'bench', ?1, 'completed', 1, 1, ?2, ?2, ?3)");
      else snprintf(sql, sizeof sql, "INSERT INTO %s (namespace, key, state, fencing, attempt, created_at, completed_at, expires_at) VALUES ('bench', ?1, 'completed', 1, 1, ?2, ?2, ?3)", tn(i));
      if (sqlite3_prepare_v2(db, sql, -1, &ins[i], 0)) die(sql);
    }
    long long now_ms = wall_ms(), day = 86400000LL;
    double t0 = now();
    exec("BEGIN");
    char key[40];
    for (long long i = 0; i < n; i++) {
      gen(&seed, key);
      long long completed = now_ms - day + i * day / n;
      int p = layout == TIMEP ? (int)(i * K / n) : part_of(key);
      sqlite3_bind_text(ins[p], 1, key, -1, SQLITE_STATIC);
      sqlite3_bind_int64(ins[p], 2, completed);
      sqlite3_bind_int64(ins[p], 3, completed + 3650 * day);
      if (layout == HASH) sqlite3_bind_int64(ins[p], 4, (sqlite3_int64)hash64("bench", key));
      if (sqlite3_step(ins[p]) != SQLITE_DONE) die("insert");
      sqlite3_reset(ins[p]);
    }
    exec("COMMIT");
    for (int i = 0; i < K; i++) sqlite3_finalize(ins[i]);
    exec("PRAGMA journal_mode=WAL");
    if (sqlite3_close(db) != SQLITE_OK) die("close");
    printf("fill %lld %s %.1fs\n", n, argv[5], now() - t0);
    return 0;
  }
  if (argc != 7) return 2;
  int batch = !strcmp(argv[5], "batch") ? 100 : 1;
  parse_layout(argv[6]);
  dbpath = path;
  settings();
  prepare_all();
  if (getenv("WARM") && *getenv("WARM")) {
    for (int i = 0; i < K; i++) { char q[200]; snprintf(q, sizeof q, "SELECT total(length(key) + expires_at) FROM %.31s", tn(i)); exec(q); }
  }
  char (*keys)[40] = malloc((size_t)n * 40);
  for (long long i = 0; i < n; i++) gen(&seed, keys[i]);
  int *claimed = malloc(sizeof(int) * batch);
  double rate[2], rx[2];
  for (int pass = 0; pass < 2; pass++) {
    long long t = wall_ms(), total = 0;
    ckpt_s = 0;
    double t0 = now();
    for (long long i = 0; i < n; i += batch) {
      int m = i + batch <= n ? batch : (int)(n - i);
      if (batch == 1) {
        if (read_row(keys[i], t)) continue;
        upsert(upsr, keys[i], t);
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
    if (!getenv("DUPS") && total != (pass ? 0 : n)) { fprintf(stderr, "pass %d claimed %lld of %lld\n", pass, total, n); return 1; }
    rate[pass] = n / dt; rx[pass] = n / (dt - ckpt_s);
  }
  printf("%.0f %.0f %.0f %.0f%s\n", rate[0], rate[1], rx[0], rx[1], bg && inline_runs ? " inline-ckpt" : "");
  sqlite3_close(db);
  return 0;
}
