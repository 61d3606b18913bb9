#ifndef DEDUP_CHIREDIS_SHIM_H
#define DEDUP_CHIREDIS_SHIM_H
#include <hiredis/hiredis.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// Replies read into one flat buffer instead of hiredis's reply objects.
//
// hiredis's reader builds each reply through a table of functions. The default ones allocate a
// `redisReply` and a copy of its string for every reply, which the caller then copies again and
// frees. The functions below append each value to a growing buffer instead, in reading order
// (an array before its elements), so reading a reply allocates nothing once the buffer has grown.
// Swift cannot fill the table itself: its layout and signatures differ between hiredis 0.14 and 1.x.
//
// Each value in the buffer: one byte of hiredis reply type (REDIS_REPLY_*), then eight bytes in
// native byte order (a string's length, an array's element count, an integer's value; 0 for nil),
// then, for strings, statuses and errors, the string's bytes.

/// The buffer a reader appends its replies to (see `dedup_reader_use_reply_buffer`).
typedef struct dedup_reply_buffer {
    unsigned char *bytes;
    size_t count;
    size_t capacity;
} dedup_reply_buffer;

/// The size of a value's header in a `dedup_reply_buffer`.
static const size_t dedup_reply_header_size = 9;

/// Appends one value (header, then `length` bytes of `text`) to the task's buffer, growing it as
/// needed; returns the buffer, or NULL when out of memory.
static inline void *dedup_reply_append(const redisReadTask *task, int type, long long value, const char *text, size_t length) {
    dedup_reply_buffer *buffer = (dedup_reply_buffer *)task->privdata;
    size_t needed = buffer->count + dedup_reply_header_size + length;
    if (needed > buffer->capacity) {
        size_t capacity = buffer->capacity < 256 ? 256 : buffer->capacity;
        while (capacity < needed) capacity *= 2;
        unsigned char *bytes = (unsigned char *)realloc(buffer->bytes, capacity);
        if (bytes == NULL) return NULL;  // the reader reports "out of memory"
        buffer->bytes = bytes;
        buffer->capacity = capacity;
    }
    unsigned char *at = buffer->bytes + buffer->count;
    int64_t header = (int64_t)value;
    at[0] = (unsigned char)type;
    memcpy(at + 1, &header, sizeof header);
    if (length > 0) memcpy(at + dedup_reply_header_size, text, length);
    buffer->count = needed;
    // The reader needs a non-NULL object; every value's is the buffer itself.
    return buffer;
}

/// A bulk string, status or error.
static void *dedup_reply_string(const redisReadTask *task, char *text, size_t length) {
    // RESP3's verbatim strings and big numbers (never asked for) read as plain strings.
    int type = task->type == REDIS_REPLY_STATUS || task->type == REDIS_REPLY_ERROR ? task->type : REDIS_REPLY_STRING;
    return dedup_reply_append(task, type, (long long)length, text, length);
}

/// An array's header; its elements follow as they are read.
#if HIREDIS_MAJOR >= 1
static void *dedup_reply_array(const redisReadTask *task, size_t elements) {
#else
static void *dedup_reply_array(const redisReadTask *task, int elements) {
#endif
    return dedup_reply_append(task, REDIS_REPLY_ARRAY, (long long)elements, NULL, 0);
}

/// An integer.
static void *dedup_reply_integer(const redisReadTask *task, long long value) {
    return dedup_reply_append(task, REDIS_REPLY_INTEGER, value, NULL, 0);
}

/// A nil bulk string or array.
static void *dedup_reply_nil(const redisReadTask *task) {
    return dedup_reply_append(task, REDIS_REPLY_NIL, 0, NULL, 0);
}

#if HIREDIS_MAJOR >= 1
// RESP3 only (the store never switches to it): kept as the server's text and as an integer.
static void *dedup_reply_double(const redisReadTask *task, double value, char *text, size_t length) {
    (void)value;
    return dedup_reply_append(task, REDIS_REPLY_STRING, (long long)length, text, length);
}

static void *dedup_reply_bool(const redisReadTask *task, int value) {
    return dedup_reply_append(task, REDIS_REPLY_INTEGER, value, NULL, 0);
}
#endif

// Values live in the buffer, which its owner empties; there is nothing to free one by one.
static void dedup_reply_free(void *object) { (void)object; }

/// The reader functions `dedup_reader_use_reply_buffer` installs.
static redisReplyObjectFunctions dedup_reply_functions = {
#if HIREDIS_MAJOR >= 1
    dedup_reply_string, dedup_reply_array, dedup_reply_integer, dedup_reply_double,
    dedup_reply_nil, dedup_reply_bool, dedup_reply_free,
#else
    dedup_reply_string, dedup_reply_array, dedup_reply_integer, dedup_reply_nil, dedup_reply_free,
#endif
};

/// Makes `reader` append every reply to `buffer` (whose owner keeps it alive as long as the
/// reader, and empties it between replies); `redisReaderGetReply` then hands back `buffer` itself
/// as the reply.
static inline void dedup_reader_use_reply_buffer(redisReader *reader, dedup_reply_buffer *buffer) {
    reader->fn = &dedup_reply_functions;
    reader->privdata = buffer;
}
#endif
