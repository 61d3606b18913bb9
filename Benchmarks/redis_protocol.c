/* Our Redis protocol from a plain C client: the commands RedisDedupStore sends for a processed
 * message, with nothing around them. dedup-bench --breakdown runs it beside the Redis C ceiling
 * (Ceilings/redis_ceiling.c) to split the distance between us and the ceiling into the protocol's
 * part (what our records and our completion script cost the server) and the Swift client's part.
 *
 * Per batch of B messages (B = 1 is the single-message path): one round trip with `TIME` and B
 * `SET <key> <in-flight record> NX PX <lease + retention - 1> GET`, then, for the K keys it created,
 * one with `EVALSHA <complete script> K <key>... <retention ms> <retention field>` followed by
 * `<owner header> "" <first claim, base 36 ms>` per key (one call for the batch, as RedisDedupStore
 * sends it). Records are in RedisDedupStore's value layout (Sources/DedupRedis/RecordValue.swift):
 * `in_flight <n>:<label> 32:<token> 30s 1d`, completed as `done <first claim> <took> 1d`. The
 * owner header carries the owner label a consumer writes by default, `<host>:<pid>`.
 * A second pass over the same keys measures duplicates. Keys live under "dedup:<n>:protocol-<pid>:"
 * and are deleted at the end.
 *
 * Build: cc -O2 -o redis_protocol redis_protocol.c -lhiredis
 * Usage: redis_protocol HOST PORT N BATCH COMPLETE_SCRIPT_FILE
 * Prints one line per pass, as the ceilings do: "redis batch=.. pass=unique|duplicate n=.. msgs_per_s=.." */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

static redisReply *reply(redisContext *c) {
  redisReply *r = 0;
  if (redisGetReply(c, (void **)&r) != REDIS_OK || !r) { fprintf(stderr, "redis: %s\n", c->errstr); exit(1); }
  if (r->type == REDIS_REPLY_ERROR) { fprintf(stderr, "redis: %s\n", r->str); exit(1); }
  return r;
}

/* Unix milliseconds in base 36, as the value layout writes points in time. */
static void base36(char *out, long long value) {
  char digits[16];
  int n = 0;
  do { digits[n++] = "0123456789abcdefghijklmnopqrstuvwxyz"[value % 36]; value /= 36; } while (value > 0);
  for (int i = 0; i < n; i++) out[i] = digits[n - 1 - i];
  out[n] = 0;
}

static char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) { perror(path); exit(1); }
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *text = malloc(size + 1);
  if (fread(text, 1, size, f) != (size_t)size) { perror(path); exit(1); }
  text[size] = 0;
  fclose(f);
  return text;
}

int main(int argc, char **argv) {
  if (argc < 6) { fprintf(stderr, "usage: %s HOST PORT N BATCH COMPLETE_SCRIPT_FILE\n", argv[0]); return 2; }
  int n = atoi(argv[3]), batch = atoi(argv[4]);
  const char *script = read_file(argv[5]);
  redisContext *c = redisConnect(argv[1], atoi(argv[2]));
  if (!c || c->err) { fprintf(stderr, "connect failed: %s\n", c ? c->errstr : "no memory"); return 1; }
  const char *load[] = {"SCRIPT", "LOAD", script};
  redisAppendCommandArgv(c, 3, load, NULL);
  redisReply *r = reply(c);
  char sha[64];
  snprintf(sha, sizeof sha, "%s", r->str);
  freeReplyObject(r);

  /* The consumer's defaults: a 30 s lease, 24 h retention. */
  const char *lease_times = "30s 1d", *retention_ms = "86400000", *retention_field = "1d", *key_px = "86429999";
  char namespace[64], key[160], head[256], value[384], claimed[32], host[128] = "", label[160];
  snprintf(namespace, sizeof namespace, "protocol-%d", (int)getpid());
  gethostname(host, sizeof host - 1);
  snprintf(label, sizeof label, "%s:%d", host, (int)getpid());
  int *created = malloc(sizeof(int) * batch);
  /* The completion call's arguments: 5 + 4 per key, pointing into per-key buffers. */
  const char **complete_argv = malloc(sizeof(char *) * (5 + 4 * batch));
  char (*keys)[160] = malloc(sizeof(*keys) * batch), (*heads)[256] = malloc(sizeof(*heads) * batch);
  char key_count[16];
  for (int pass = 0; pass < 2; pass++) {
    double t0 = now();
    for (int i = 0; i < n; i += batch) {
      int m = i + batch <= n ? batch : n - i;
      const char *time_argv[] = {"TIME"};
      redisAppendCommandArgv(c, 1, time_argv, NULL);
      for (int j = 0; j < m; j++) {
        snprintf(key, sizeof key, "dedup:%zu:%s:msg-%d", strlen(namespace), namespace, i + j);
        snprintf(head, sizeof head, "in_flight %zu:%s 32:%016x%016x ", strlen(label), label, pass, i + j);
        snprintf(value, sizeof value, "%s%s", head, lease_times);
        const char *set_argv[] = {"SET", key, value, "NX", "PX", key_px, "GET"};
        redisAppendCommandArgv(c, 7, set_argv, NULL);
      }
      r = reply(c);
      base36(claimed, atoll(r->element[0]->str) * 1000 + atoll(r->element[1]->str) / 1000);
      freeReplyObject(r);
      for (int j = 0; j < m; j++) {
        r = reply(c);
        created[j] = r->type == REDIS_REPLY_NIL;
        freeReplyObject(r);
      }
      int k = 0;
      for (int j = 0; j < m; j++) {
        if (!created[j]) continue;
        snprintf(keys[k], sizeof keys[k], "dedup:%zu:%s:msg-%d", strlen(namespace), namespace, i + j);
        snprintf(heads[k], sizeof heads[k], "in_flight %zu:%s 32:%016x%016x ", strlen(label), label, pass, i + j);
        k++;
      }
      if (k == 0) continue;
      int argc3 = 0;
      snprintf(key_count, sizeof key_count, "%d", k);
      complete_argv[argc3++] = "EVALSHA";
      complete_argv[argc3++] = sha;
      complete_argv[argc3++] = key_count;
      for (int j = 0; j < k; j++) complete_argv[argc3++] = keys[j];
      complete_argv[argc3++] = retention_ms;
      complete_argv[argc3++] = retention_field;
      for (int j = 0; j < k; j++) {
        complete_argv[argc3++] = heads[j];
        complete_argv[argc3++] = "";
        complete_argv[argc3++] = claimed;
      }
      redisAppendCommandArgv(c, argc3, complete_argv, NULL);
      r = reply(c);
      if (r->type != REDIS_REPLY_ARRAY || r->elements != (size_t)k) { fprintf(stderr, "unexpected completion reply\n"); exit(1); }
      for (size_t j = 0; j < r->elements; j++) {
        if (r->element[j]->type != REDIS_REPLY_INTEGER || r->element[j]->integer != 1) { fprintf(stderr, "completion refused\n"); exit(1); }
      }
      freeReplyObject(r);
    }
    double dt = now() - t0;
    printf("redis batch=%d pass=%s n=%d msgs_per_s=%.0f\n", batch, pass ? "duplicate" : "unique", n, n / dt);
    fflush(stdout);
  }
  for (int i = 0; i < n; i++) {
    snprintf(key, sizeof key, "dedup:%zu:%s:msg-%d", strlen(namespace), namespace, i);
    const char *unlink_argv[] = {"UNLINK", key};
    redisAppendCommandArgv(c, 2, unlink_argv, NULL);
    if (i % 1000 == 999 || i == n - 1) {
      for (int j = i - (i % 1000); j <= i; j++) freeReplyObject(reply(c));
    }
  }
  redisFree(c);
  free(created);
  free(complete_argv);
  free(keys);
  free(heads);
  return 0;
}
