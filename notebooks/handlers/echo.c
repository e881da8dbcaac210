/*
 * An fnrun echo handler in C, with no protobuf library: the messages are encoded
 * by hand.  It proves that a handler need not be Python (nor use our SDK).
 *
 *   cc -O2 -o echo_c echo.c
 *
 * For each call it reads an Event frame and an ExecutionContext frame from stdin
 * and writes one Result frame to stdout: status 200, the Event's data, and the
 * context's env as the result env.  It exits 0 when stdin closes.
 *
 * Built with one of these defined, it has a fault on purpose, for the conformance
 * checker's tests (fnrun-nb check): -DFAULT_STRAY_STDOUT prints a banner on stdout
 * before its first Result; -DFAULT_IGNORE_EOF keeps running when stdin closes.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int read_full(uint8_t *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(0, buf + got, n - got);
        if (r <= 0) return got == 0 ? 0 : -1;  /* 0: clean EOF before the frame */
        got += (size_t)r;
    }
    return 1;
}

static int write_full(const uint8_t *buf, size_t n) {
    while (n > 0) {
        ssize_t w = write(1, buf, n);
        if (w <= 0) return -1;
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Read one frame into a malloc'd buffer; returns 1, 0 at EOF, -1 on error. */
static int read_frame(uint8_t **payload, uint32_t *len) {
    uint8_t h[4];
    int r = read_full(h, 4);
    if (r <= 0) return r;
    int32_t n = (int32_t)((uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3]);
    if (n < 0 || n > (64 << 20)) return -1;
    *payload = malloc(n ? (size_t)n : 1);
    if (*payload == NULL) return -1;
    *len = (uint32_t)n;
    if (n && read_full(*payload, (size_t)n) != 1) return -1;
    return 1;
}

static int get_varint(const uint8_t *p, size_t end, size_t *pos, uint64_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64 && *pos < end; shift += 7) {
        uint8_t b = p[(*pos)++];
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) { *out = v; return 0; }
    }
    return -1;
}

static size_t put_varint(uint8_t *p, uint64_t v) {
    size_t n = 0;
    while (v > 0x7f) { p[n++] = (uint8_t)(v & 0x7f) | 0x80; v >>= 7; }
    p[n++] = (uint8_t)v;
    return n;
}

static int at_eof(void) {
#ifdef FAULT_IGNORE_EOF
    for (;;) pause();
#endif
    return 0;
}

int main(void) {
#ifdef FAULT_STRAY_STDOUT
    fputs("echo_c ready\n", stdout);
    fflush(stdout);
#endif
    for (;;) {
        uint8_t *event = NULL, *ctx = NULL;
        uint32_t elen = 0, clen = 0;
        int r = read_frame(&event, &elen);
        if (r == 0) return at_eof();
        if (r < 0) return 2;
        r = read_frame(&ctx, &clen);
        if (r == 0) return 0;
        if (r < 0) return 2;

        /* Event: field 1 (data), length-delimited. */
        const uint8_t *data = (const uint8_t *)"";
        uint64_t dlen = 0;
        size_t pos = 0;
        while (pos < elen) {
            uint64_t key, n;
            if (get_varint(event, elen, &pos, &key) || (key & 7) != 2 ||
                get_varint(event, elen, &pos, &n) || n > elen - pos) return 2;
            if (key >> 3 == 1) { data = event + pos; dlen = n; }
            pos += n;
        }

        /* Result: the context's envVars entries (field 2 there) become the result's
           envVars (field 1), then data (field 2), then status 200 (field 3). */
        uint8_t *out = malloc(4 + clen + dlen + 32);
        if (out == NULL) return 2;
        size_t o = 4;
        pos = 0;
        while (pos < clen) {
            uint64_t key, n;
            if (get_varint(ctx, clen, &pos, &key)) return 2;
            if ((key & 7) == 0) { if (get_varint(ctx, clen, &pos, &n)) return 2; continue; }
            if ((key & 7) != 2 || get_varint(ctx, clen, &pos, &n) || n > clen - pos) return 2;
            if (key >> 3 == 2) {
                out[o++] = 0x0a;
                o += put_varint(out + o, n);
                memcpy(out + o, ctx + pos, n);
                o += n;
            }
            pos += n;
        }
        if (dlen) {
            out[o++] = 0x12;
            o += put_varint(out + o, dlen);
            memcpy(out + o, data, dlen);
            o += dlen;
        }
        out[o++] = 0x18;
        o += put_varint(out + o, 200);
        uint32_t body = (uint32_t)(o - 4);
        out[0] = body >> 24; out[1] = body >> 16; out[2] = body >> 8; out[3] = (uint8_t)body;
        if (write_full(out, o)) return 0;  /* the host went away */
        free(out);
        free(event);
        free(ctx);
    }
}
