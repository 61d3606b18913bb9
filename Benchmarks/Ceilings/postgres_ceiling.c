// The PostgreSQL ceiling: the store's own statements (the claim and completion functions of
// Migrations/postgres, called as the store calls them) over libpq, the fastest way libpq offers:
// each statement prepared once (a named statement, parsed and planned once), its arrays sent as
// text, one connection, one statement a round trip. What a C client of the same protocol does per
// message, with nothing around it.
//
//   postgres_ceiling CONNINFO SCHEMA MODE N
//     MODE single  one claim, then one completion of the acquired key, per message
//          batch   claims of 100 keys in one statement, their completions in another
//          txn     BEGIN; claim; INSERT one effect row; completion; COMMIT, per message
//   Every claim passes a lock_timeout of 5,000 ms, as the store passes its configured one: the
//   claim function sets it for the transaction before its upsert (in txn mode, what bounds the
//   effect row's and the completion's lock waits too), in the same call.
//   Each mode runs N new keys, then the same N keys again (all duplicates), and prints one line a
//   pass: `postgres mode=M batch=B pass=unique|duplicate n=N seconds=S msgs_per_s=R`.
//
// The schema must have been migrated (the benchmark opens a store on it first) and, for txn,
// hold bench_effects(message_id text, fencing bigint).
#include <postgresql/libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static PGconn *connection;

static void fail(const char *what, PGresult *result) {
    fprintf(stderr, "postgres_ceiling: %s: %s\n", what,
            result ? PQresultErrorMessage(result) : PQerrorMessage(connection));
    exit(1);
}

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void prepare(const char *name, const char *sql, int parameters) {
    PGresult *result = PQprepare(connection, name, sql, parameters, NULL);
    if (PQresultStatus(result) != PGRES_COMMAND_OK) fail(name, result);
    PQclear(result);
}

static void command(const char *sql) {
    PGresult *result = PQexec(connection, sql);
    if (PQresultStatus(result) != PGRES_COMMAND_OK) fail(sql, result);
    PQclear(result);
}

// A text array literal of `count` elements, each printed by `element` (keys and tokens are plain
// ASCII words, which an array literal and bytea's escape format both take as they are).
typedef int (*Element)(char *out, int index, void *context);

static void array(char *out, int first, int count, Element element, void *context) {
    char *p = out;
    *p++ = '{';
    for (int i = 0; i < count; i++) {
        if (i) *p++ = ',';
        p += element(p, first + i, context);
    }
    *p++ = '}';
    *p = 0;
}

static int key_element(char *out, int index, void *context) { return sprintf(out, "msg-%d", index); }
static int token_element(char *out, int index, void *context) {
    return sprintf(out, "%08x-0000-4000-8000-%012d", *(unsigned *)context, index);
}
static int text_element(char *out, int index, void *context) { return sprintf(out, "%s", (const char *)context); }

// Claims keys [first, first + count) and completes those acquired; returns how many were acquired
// (a fresh key) and adds to *duplicates those already completed.
static int claim_and_complete(int first, int count, unsigned pass_token, int txn, int *duplicates) {
    static char namespaces[8 * 128], keys[24 * 128], tokens[48 * 128], labels[24 * 128];
    static char leases[8 * 128], retentions[16 * 128], fingerprints[4 * 128], has[4 * 128], brokers[4 * 128];
    array(namespaces, first, count, text_element, "bench");
    array(keys, first, count, key_element, NULL);
    array(tokens, first, count, token_element, &pass_token);
    array(labels, first, count, text_element, "bench-host:4242");
    array(leases, first, count, text_element, "30000");
    array(retentions, first, count, text_element, "86400000");
    array(fingerprints, first, count, text_element, "\"\"");
    array(has, first, count, text_element, "f");
    array(brokers, first, count, text_element, "-1");
    const char *claim_values[10] = {namespaces, keys, tokens, labels, leases, retentions, fingerprints, has, brokers,
                                    "5000"};
    if (txn) command("BEGIN");
    PGresult *claimed = PQexecPrepared(connection, "claim", 10, claim_values, NULL, NULL, 0);
    if (PQresultStatus(claimed) != PGRES_TUPLES_OK || PQntuples(claimed) != count) fail("claim", claimed);
    // Column 2 is the lease's fencing token (NULL when none was taken), column 9 the existing
    // record's state.
    int acquired = 0;
    char done_keys[24 * 128], done_tokens[48 * 128];
    char *k = done_keys, *t = done_tokens;
    *k++ = '{';
    *t++ = '{';
    for (int row = 0; row < count; row++) {
        int index = first + atoi(PQgetvalue(claimed, row, 0)) - 1;
        if (!PQgetisnull(claimed, row, 2)) {
            if (acquired++) {
                *k++ = ',';
                *t++ = ',';
            }
            k += key_element(k, index, NULL);
            t += token_element(t, index, &pass_token);
            if (txn) {
                char id[32];
                snprintf(id, sizeof id, "msg-%d", index);
                const char *effect_values[2] = {id, PQgetvalue(claimed, row, 2)};
                PGresult *effect = PQexecPrepared(connection, "effect", 2, effect_values, NULL, NULL, 0);
                if (PQresultStatus(effect) != PGRES_COMMAND_OK) fail("effect", effect);
                PQclear(effect);
            }
        } else if (strcmp(PQgetvalue(claimed, row, 9), "completed") == 0) {
            (*duplicates)++;
        }
    }
    *k++ = '}';
    *k = 0;
    *t++ = '}';
    *t = 0;
    PQclear(claimed);
    if (acquired) {
        static char done_namespaces[8 * 128], done_retentions[16 * 128], results[4 * 128], has_results[4 * 128];
        array(done_namespaces, 0, acquired, text_element, "bench");
        array(done_retentions, 0, acquired, text_element, "86400000");
        array(results, 0, acquired, text_element, "\"\"");
        array(has_results, 0, acquired, text_element, "f");
        const char *complete_values[6] = {done_namespaces, done_keys, done_tokens, done_retentions, results, has_results};
        PGresult *completed = PQexecPrepared(connection, "complete", 6, complete_values, NULL, NULL, 0);
        if (PQresultStatus(completed) != PGRES_TUPLES_OK || PQntuples(completed) != acquired) fail("complete", completed);
        PQclear(completed);
    }
    if (txn) command("COMMIT");
    return acquired;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: postgres_ceiling CONNINFO SCHEMA single|batch|txn N\n");
        return 2;
    }
    const char *schema = argv[2], *mode = argv[3];
    int n = atoi(argv[4]);
    int batch = strcmp(mode, "batch") == 0 ? 100 : 1;
    int txn = strcmp(mode, "txn") == 0;
    connection = PQconnectdb(argv[1]);
    if (PQstatus(connection) != CONNECTION_OK) fail("connect", NULL);
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT * FROM \"%s\".dedup_claim($1::bytea[], $2::bytea[], $3::bytea[], $4::bytea[], $5::bigint[], "
             "$6::bigint[], $7::bytea[], $8::bool[], $9::bigint[], $10::bigint)",
             schema);
    prepare("claim", sql, 10);
    snprintf(sql, sizeof sql,
             "SELECT * FROM \"%s\".dedup_complete($1::bytea[], $2::bytea[], $3::bytea[], $4::bigint[], $5::bytea[], "
             "$6::bool[])",
             schema);
    prepare("complete", sql, 6);
    if (txn) {
        snprintf(sql, sizeof sql, "INSERT INTO \"%s\".bench_effects (message_id, fencing) VALUES ($1, $2)", schema);
        prepare("effect", sql, 2);
    }
    for (int pass = 0; pass < 2; pass++) {
        int acquired = 0, duplicates = 0;
        double start = now_seconds();
        for (int first = 0; first < n; first += batch) {
            int count = first + batch > n ? n - first : batch;
            acquired += claim_and_complete(first, count, 0x5eed0000u + pass, txn, &duplicates);
        }
        double seconds = now_seconds() - start;
        int expected_new = pass == 0 ? n : 0, expected_duplicates = pass == 0 ? 0 : n;
        if (acquired != expected_new || duplicates != expected_duplicates) {
            fprintf(stderr, "postgres_ceiling: pass %d acquired %d and found %d duplicates of %d keys\n", pass, acquired,
                    duplicates, n);
            return 1;
        }
        printf("postgres mode=%s batch=%d pass=%s n=%d seconds=%.3f msgs_per_s=%.0f\n", mode, batch,
               pass == 0 ? "unique" : "duplicate", n, seconds, n / seconds);
        fflush(stdout);
    }
    PQfinish(connection);
    return 0;
}
