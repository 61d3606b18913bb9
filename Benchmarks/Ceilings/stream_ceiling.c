/* The ceiling for consuming a Redis stream: a plain C consumer of a group, with no dedup at all.
 *
 * It fills a stream of its own with N entries (one field `id` holding a message ID, one `payload`),
 * creates a group at the beginning, then times the consumer loop the stream runner is compared with:
 * `XREADGROUP GROUP g c COUNT 100 STREAMS <key> >`, then one `XACK <key> g <ids...>` for the entries
 * read, until the stream is drained: two round trips per 100 entries. The stream is deleted at the end.
 *
 * Build: cc -O2 -o stream_ceiling stream_ceiling.c -lhiredis
 * Usage: stream_ceiling HOST PORT N
 * Prints one line, as the other ceilings do: "stream batch=100 pass=unique n=.. msgs_per_s=.." */
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

int main(int argc, char **argv) {
  if (argc != 4) { fprintf(stderr, "usage: stream_ceiling HOST PORT N\n"); return 2; }
  const char *host = argv[1];
  int port = atoi(argv[2]);
  long n = atol(argv[3]);
  const long batch = 100;
  redisContext *c = redisConnect(host, port);
  if (!c || c->err) { fprintf(stderr, "connect: %s\n", c ? c->errstr : "out of memory"); return 1; }
  char key[64];
  snprintf(key, sizeof key, "bench-stream-ceiling-%d", (int)getpid());

  /* Fill the stream, pipelined a thousand entries at a time. */
  char id[32];
  for (long done = 0; done < n;) {
    long chunk = n - done < 1000 ? n - done : 1000;
    for (long i = 0; i < chunk; i++) {
      snprintf(id, sizeof id, "m-%ld", done + i);
      redisAppendCommand(c, "XADD %s * id %s payload x", key, id);
    }
    for (long i = 0; i < chunk; i++) freeReplyObject(reply(c));
    done += chunk;
  }
  freeReplyObject(reply((redisAppendCommand(c, "XGROUP CREATE %s g 0", key), c)));

  /* Consume: read up to 100, ack them in one call. */
  const char **argvAck = malloc(sizeof(char *) * (batch + 3));
  size_t *lengths = malloc(sizeof(size_t) * (batch + 3));
  long consumed = 0;
  double started = now();
  while (consumed < n) {
    redisAppendCommand(c, "XREADGROUP GROUP g c COUNT %ld STREAMS %s >", batch, key);
    redisReply *read = reply(c);
    if (read->type != REDIS_REPLY_ARRAY || read->elements == 0) { fprintf(stderr, "stream drained early\n"); return 1; }
    redisReply *entries = read->element[0]->element[1];
    argvAck[0] = "XACK"; lengths[0] = 4;
    argvAck[1] = key; lengths[1] = strlen(key);
    argvAck[2] = "g"; lengths[2] = 1;
    size_t count = entries->elements;
    for (size_t i = 0; i < count; i++) {
      redisReply *entryID = entries->element[i]->element[0];
      argvAck[3 + i] = entryID->str;
      lengths[3 + i] = entryID->len;
    }
    redisAppendCommandArgv(c, (int)(count + 3), argvAck, lengths);
    redisReply *acked = reply(c);
    if (acked->type != REDIS_REPLY_INTEGER || acked->integer != (long long)count) { fprintf(stderr, "XACK acked too few\n"); return 1; }
    freeReplyObject(acked);
    freeReplyObject(read);
    consumed += (long)count;
  }
  double elapsed = now() - started;
  printf("stream batch=%ld pass=unique n=%ld msgs_per_s=%.0f\n", batch, n, n / elapsed);
  freeReplyObject(reply((redisAppendCommand(c, "DEL %s", key), c)));
  free(argvAck);
  free(lengths);
  redisFree(c);
  return 0;
}
