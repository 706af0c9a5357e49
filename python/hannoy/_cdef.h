/* The C ABI of libhannoy, as declared to cffi (ABI mode, ffi.dlopen).
 *
 * This is the contract of capi/ABI.md, in the plain C that cffi's ffi.cdef accepts (no
 * preprocessor, stdint types). tests/test_abi.py checks that every function here matches the
 * declaration cgo writes into libhannoy.h, and that no function is missing on either side.
 *
 * Every function returns a status (0 = success, see _errors.py for the codes). On failure the
 * last argument `char **err`, when not NULL, receives a malloc'ed UTF-8 message that the caller
 * frees with hannoy_free.
 */

void hannoy_free(void *p);
int hannoy_version(char **out, char **err);
int hannoy_verify(const char *path, char **json, char **err);

/* Databases */
int hannoy_db_open(const char *path, int32_t metric, const char *name, uint64_t env_size,
                   int32_t flags, int64_t budget, uint64_t *db, char **err);
int hannoy_db_close(uint64_t db, char **err);
int hannoy_db_info(uint64_t db, char **json, char **err);

/* Writers */
int hannoy_writer_open(uint64_t db, uint32_t index, uint32_t dims, uint32_t m, uint32_t m0,
                       uint32_t ef_construction, int32_t has_seed, uint64_t seed,
                       int32_t threads, uint64_t *w, char **err);
int hannoy_writer_add_items(uint64_t w, const uint32_t *items, const float *vectors,
                            uint64_t n, uint32_t dims, char **err);
int hannoy_writer_queue_items(uint64_t w, const uint32_t *items, const float *vectors,
                              uint64_t n, uint32_t dims, char **err);
int hannoy_writer_del_item(uint64_t w, uint32_t item, int32_t *existed, char **err);
int hannoy_writer_clear(uint64_t w, char **err);
int hannoy_writer_need_build(uint64_t w, int32_t *need, char **err);
int hannoy_writer_contains(uint64_t w, uint32_t item, int32_t *found, char **err);
int hannoy_writer_item_vector(uint64_t w, uint32_t item, float *out, uint32_t dims,
                              int32_t *found, char **err);
int hannoy_writer_len(uint64_t w, uint64_t *n, char **err);
int hannoy_writer_build(uint64_t w, char **err);
int hannoy_writer_cancel(uint64_t w);
int hannoy_writer_progress(uint64_t w, int32_t *phase, uint64_t *done, uint64_t *total);
int hannoy_writer_commit(uint64_t w, char **err);
int hannoy_writer_abort(uint64_t w, char **err);

/* Readers */
int hannoy_reader_open(uint64_t db, uint32_t index, int64_t budget, int32_t mode, uint64_t *r, char **err);
int hannoy_reader_close(uint64_t r, char **err);
int hannoy_reader_info(uint64_t r, char **json, char **err);
int hannoy_reader_search(uint64_t r, const float *queries, uint64_t nq, uint32_t dims,
                         uint32_t k, uint32_t ef, const uint32_t *candidates,
                         int64_t n_candidates, const int64_t *filter_lens,
                         int64_t linear_below, float linear_below_ratio, int32_t threads,
                         uint32_t *ids, float *dists, uint32_t *counts, char **err);
int hannoy_reader_search_vec(uint64_t r, const void *query, uint32_t dims, uint32_t k, uint32_t ef,
                             uint32_t *ids, float *dists, uint32_t *count, char **err);
int hannoy_reader_search_items(uint64_t r, const uint32_t *items, uint64_t n, uint32_t k,
                               uint32_t ef, const uint32_t *candidates, int64_t n_candidates,
                               const int64_t *filter_lens, int64_t linear_below,
                               float linear_below_ratio, int32_t threads, uint32_t *ids,
                               float *dists, int32_t *counts, char **err);
int hannoy_reader_item_vector(uint64_t r, uint32_t item, float *out, uint32_t dims,
                              int32_t *found, char **err);
int hannoy_reader_contains(uint64_t r, uint32_t item, int32_t *found, char **err);
int hannoy_reader_len(uint64_t r, uint64_t *n, char **err);
int hannoy_reader_item_ids(uint64_t r, uint32_t *out, uint64_t cap, uint64_t *n, char **err);
