/* Not a ceiling: fills a Redis server with N dedup records for dedup-bench's growth rows, fast:
 * `SET <PREFIX><key> <value> PX <TTL_MS>`, pipelined ten thousand at a time over one hiredis
 * connection. The value is a completed record the real store wrote (dedup-bench claims and
 * completes one message through RedisDedupStore, reads its value back and passes it in
 * VALUE_FILE), so every key is a record the store reads as completed. Keys are two 64-bit numbers
 * in hex from the xorshift generator of dedup-bench's KeyGenerator seeded with SEED (so dedup-bench
 * knows which keys are present).
 *
 * Build: cc -O2 -o redis_fill redis_fill.c -lhiredis
 * Usage: redis_fill HOST PORT N SEED PREFIX VALUE_FILE TTL_MS
 * Prints one line: "redis fill keys=.. seconds=.." */
#include <hiredis/hiredis.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

static void check(redisContext *c) {
  redisReply *r = 0;
  if (redisGetReply(c, (void **)&r) != REDIS_OK || !r) { fprintf(stderr, "redis: %s\n", c->errstr); exit(1); }
  if (r->type == REDIS_REPLY_ERROR) { fprintf(stderr, "redis: %s\n", r->str); exit(1); }
  freeReplyObject(r);
}

int main(int argc, char **argv) {
  if (argc != 8) { fprintf(stderr, "usage: %s HOST PORT N SEED PREFIX VALUE_FILE TTL_MS\n", argv[0]); return 2; }
  long long n = atoll(argv[3]);
  uint64_t seed = strtoull(argv[4], 0, 0);
  if (seed == 0) seed = 0x9E3779B97F4A7C15ull;
  const char *prefix = argv[5], *ttl = argv[7];
  FILE *f = fopen(argv[6], "rb");
  if (!f) { perror(argv[6]); return 1; }
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *value = malloc(size + 1);
  if (fread(value, 1, size, f) != (size_t)size) { perror(argv[6]); return 1; }
  fclose(f);
  redisContext *c = redisConnect(argv[1], atoi(argv[2]));
  if (!c || c->err) { fprintf(stderr, "connect failed: %s\n", c ? c->errstr : "no memory"); return 1; }
  size_t prefix_length = strlen(prefix);
  char *key = malloc(prefix_length + 40);
  memcpy(key, prefix, prefix_length);
  double t0 = now();
  const long long chunk = 10000;
  for (long long i = 0; i < n; i += chunk) {
    long long m = i + chunk <= n ? chunk : n - i;
    for (long long j = 0; j < m; j++) {
      uint64_t k[2];
      for (int h = 0; h < 2; h++) { seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17; k[h] = seed; }
      int key_length = snprintf(key + prefix_length, 40, "%016llx-%016llx", (unsigned long long)k[0], (unsigned long long)k[1]);
      const char *args[] = {"SET", key, value, "PX", ttl};
      size_t lengths[] = {3, prefix_length + key_length, (size_t)size, 2, strlen(ttl)};
      redisAppendCommandArgv(c, 5, args, lengths);
    }
    for (long long j = 0; j < m; j++) check(c);
  }
  printf("redis fill keys=%lld seconds=%.1f\n", n, now() - t0);
  redisFree(c);
  free(key);
  free(value);
  return 0;
}
