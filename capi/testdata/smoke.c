/* Smoke test of a built libhannoy.so through its C ABI (capi/ABI.md), for a library that no
 * Python here can load: .ci/dist.sh compiles it for arm64 and runs it under qemu on the
 * library of the aarch64 wheel. It loads the library with dlopen (as cffi does), checks
 * hannoy_version against the expected version, builds a small euclidean index (deterministic
 * data, seed, one thread), commits, reopens it with a reader and compares the searches with
 * a brute-force scan: every stored vector finds itself first at distance 0, the distances
 * returned are the exact ones, and recall@10 over all queries is at least 0.95.
 *
 * usage: smoke <path to libhannoy.so> <expected version> <database directory>
 * Prints "smoke: ok ..." and exits 0, or prints what failed and exits 1.
 */
#include <dlfcn.h>
#include <math.h> /* fabs */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N 400
#define DIMS 16
#define K 10

/* The entry points' types come from the header cgo writes beside the library (compile with
   -I on its directory), so this program cannot drift from the ABI it loads. */
#include "libhannoy.h"

typedef __typeof__(hannoy_version) *version_fn;
typedef __typeof__(hannoy_free) *free_fn;
typedef __typeof__(hannoy_db_open) *db_open_fn;
typedef __typeof__(hannoy_db_close) *db_close_fn;
typedef __typeof__(hannoy_writer_open) *writer_open_fn;
typedef __typeof__(hannoy_writer_add_items) *writer_add_fn;
typedef __typeof__(hannoy_writer_build) *writer_fn;
typedef __typeof__(hannoy_reader_open) *reader_open_fn;
typedef __typeof__(hannoy_reader_info) *reader_info_fn;
typedef __typeof__(hannoy_reader_search) *reader_search_fn;

static void *lib;
static free_fn hfree;

static void *sym(const char *name)
{
    void *p = dlsym(lib, name);
    if (p == NULL) {
        fprintf(stderr, "smoke: %s is not in the library: %s\n", name, dlerror());
        exit(1);
    }
    return p;
}

static void check(int status, char *err, const char *what)
{
    if (status != 0) {
        fprintf(stderr, "smoke: %s failed with status %d: %s\n", what, status,
                err ? err : "(no message)");
        exit(1);
    }
}

static float vectors[N * DIMS];
static float queries[N * DIMS];
static uint32_t ids[N * K];
static float dists[N * K];
static uint32_t counts[N];

int main(int argc, char **argv)
{
    char *out = NULL, *err = NULL, want[128];
    uint64_t db, w, r, state = 88172645463325252ULL;
    uint32_t items[N];
    int i, j, q, found = 0, self_first = 0;
    double worst = 0;

    if (argc != 4) {
        fprintf(stderr, "usage: smoke <libhannoy.so> <version> <database directory>\n");
        return 1;
    }
    lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        fprintf(stderr, "smoke: dlopen %s: %s\n", argv[1], dlerror());
        return 1;
    }
    hfree = (free_fn)sym("hannoy_free");

    check(((version_fn)sym("hannoy_version"))(&out, &err), err, "hannoy_version");
    snprintf(want, sizeof want, "\"version\":\"%s\"", argv[2]);
    if (strstr(out, want) == NULL || strstr(out, "\"format\":\"0.1.3\"") == NULL) {
        fprintf(stderr, "smoke: hannoy_version says %s, want %s and format 0.1.3\n", out, want);
        return 1;
    }
    printf("smoke: %s\n", out);
    hfree(out);

    for (i = 0; i < N * DIMS; i++) { /* xorshift64: the same data on every machine */
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        vectors[i] = (float)((state >> 11) % 2001) / 1000.0f - 1.0f;
    }
    for (i = 0; i < N; i++)
        items[i] = (uint32_t)(i * 3 + 1); /* sparse ids */

    /* a small map: qemu's user mode cannot map the default 1 TiB */
    check(((db_open_fn)sym("hannoy_db_open"))(argv[3], 1 /* euclidean */, NULL, 1ULL << 30, 0, 0,
                                               &db, &err), err, "hannoy_db_open");
    check(((writer_open_fn)sym("hannoy_writer_open"))(db, 0, DIMS, 16, 0, 64, 1, 42, 1, &w, &err),
          err, "hannoy_writer_open");
    check(((writer_add_fn)sym("hannoy_writer_add_items"))(w, items, vectors, N, DIMS, &err), err,
          "hannoy_writer_add_items");
    check(((writer_fn)sym("hannoy_writer_build"))(w, &err), err, "hannoy_writer_build");
    check(((writer_fn)sym("hannoy_writer_commit"))(w, &err), err, "hannoy_writer_commit");

    check(((reader_open_fn)sym("hannoy_reader_open"))(db, 0, 0, 0, &r, &err), err,
          "hannoy_reader_open");
    check(((reader_info_fn)sym("hannoy_reader_info"))(r, &out, &err), err, "hannoy_reader_info");
    if (strstr(out, "\"n_items\":400") == NULL) {
        fprintf(stderr, "smoke: reader info %s, want 400 items\n", out);
        return 1;
    }
    hfree(out);
    memcpy(queries, vectors, sizeof queries);
    check(((reader_search_fn)sym("hannoy_reader_search"))(r, queries, N, DIMS, K, 64, NULL, -1, NULL,
                                                          1000, 1.0f, 1,
                                                          ids, dists, counts, &err),
          err, "hannoy_reader_search");

    for (q = 0; q < N; q++) {
        float exact[N];
        const float *x = &queries[q * DIMS];
        if (counts[q] != K) {
            fprintf(stderr, "smoke: query %d has %u results, want %d\n", q, counts[q], K);
            return 1;
        }
        for (i = 0; i < N; i++) {
            double s = 0;
            for (j = 0; j < DIMS; j++) {
                double d = (double)x[j] - vectors[i * DIMS + j];
                s += d * d;
            }
            exact[i] = (float)s; /* hannoy's euclidean distance is squared L2 (upstream's) */
        }
        if (ids[q * K] == items[q] && dists[q * K] == 0.0f)
            self_first++;
        for (j = 0; j < K; j++) {
            uint32_t id = ids[q * K + j];
            int rank = 0, pos = (int)(id - 1) / 3;
            if (id % 3 != 1 || pos < 0 || pos >= N) {
                fprintf(stderr, "smoke: query %d returned unknown id %u\n", q, id);
                return 1;
            }
            /* the distance returned is the exact one */
            if (fabs(dists[q * K + j] - exact[pos]) > 1e-4 * (1 + exact[pos]))
                worst = fabs(dists[q * K + j] - exact[pos]) > worst
                            ? fabs(dists[q * K + j] - exact[pos]) : worst;
            /* among the true K nearest: fewer than K points are strictly closer */
            for (i = 0; i < N; i++)
                rank += exact[i] < exact[pos];
            found += rank < K;
        }
    }
    if (worst > 0) {
        fprintf(stderr, "smoke: a returned distance is off the exact one by %g\n", worst);
        return 1;
    }
    if (self_first != N || found < 0.95 * N * K) {
        fprintf(stderr, "smoke: %d of %d queries found themselves first, recall@%d %.3f\n",
                self_first, N, K, (double)found / (N * K));
        return 1;
    }
    check(((writer_fn)sym("hannoy_reader_close"))(r, &err), err, "hannoy_reader_close");
    check(((db_close_fn)sym("hannoy_db_close"))(db, &err), err, "hannoy_db_close");
    printf("smoke: ok: %d items, %d dims; every query found itself first; recall@%d %.3f\n", N,
           DIMS, K, (double)found / (N * K));
    return 0;
}
