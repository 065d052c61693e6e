/*
 * libFuzzer harness: kzgate/nametable_core.h, the policy's hash table, against a
 * plain model (a list searched linearly), after every operation.
 *
 * The input is a program (-max_len=4096 by default: a few hundred operations; a
 * name is at most 255 octets). Octet 0 seeds the hash. Then operations, each an
 * op octet whose value mod 8 says which:
 *   0, 1  set     length octet, name, value octet (value * 0x01010101)
 *   2     discard length octet, name
 *   3     get     length octet, name
 *   4     match   length octet, name
 *   5     match   two length octets (big-endian), name: any length, not only 255
 *   6     items   every entry once, each as in the model
 *   7     clear   when the op octet is 0xFF, else set
 * An input that ends early reads as zeros / a shorter name. Compaction is set to
 * start after 64 removed octets, so short programs reach it.
 * tests/unit/test_native_corpus.py decodes the same programs for the Python type.
 */
#include <stdint.h>

#include "fuzz_common.h"
#include "../../../kzgate/nametable_core.h"

typedef struct {
    unsigned char name[NT_MAX_NAME];
    size_t n;
    uint32_t v;
} Entry;

static Entry *model;
static size_t model_len, model_cap;

static long model_find(const unsigned char *name, size_t n)
{
    for (size_t i = 0; i < model_len; i++)
        if (model[i].n == n && memcmp(model[i].name, name, n) == 0)
            return (long)i;
    return -1;
}

static long model_match(const unsigned char *name, size_t n, size_t *at)
{
    size_t off = 0;
    while (n > 0 && off < n - 1) {
        long i = model_find(name + off, n - off);
        if (i >= 0) {
            *at = off;
            return (long)model[i].v;
        }
        off += (size_t)name[off] + 1;
    }
    return -1;
}

typedef struct {
    const uint8_t *p, *end;
} Reader;

static size_t octet(Reader *r) { return r->p < r->end ? *r->p++ : 0; }

static const uint8_t *bytes(Reader *r, size_t *n)
{
    size_t have = (size_t)(r->end - r->p);
    if (*n > have)
        *n = have;
    const uint8_t *at = r->p;
    r->p += *n;
    return at;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    default_max_len(argc, argv, "-max_len=4096");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Reader r = {data, data + size};
    nt_table t;
    CHECK(nt_init(&t, (uint64_t)octet(&r) * 0x9E3779B97F4A7C15ULL) == NT_OK);
    t.compact_min = 64;
    model_len = 0;
    while (r.p < r.end) {
        unsigned op = (unsigned)octet(&r), kind = op % 8;
        if (kind == 7 && op == 0xFF) {
            CHECK(nt_reset(&t) == NT_OK);
            model_len = 0;
        } else if (kind == 6) {
            size_t i = 0, n, seen = 0;
            const unsigned char *name;
            uint32_t v;
            while (nt_next(&t, &i, &name, &n, &v)) {
                long m = model_find(name, n);
                CHECK(m >= 0 && model[m].v == v);
                seen++;
            }
            CHECK(seen == model_len && t.used == model_len);
        } else {
            size_t n = octet(&r);
            if (kind == 5)
                n = n << 8 | octet(&r);
            const uint8_t *name = bytes(&r, &n);
            long m = model_find(name, n);
            if (kind <= 1 || kind == 7) {
                uint32_t v = (uint32_t)octet(&r) * 0x01010101u;
                int rc = nt_set(&t, name, n, v);
                if (n < 1 || n > NT_MAX_NAME) {
                    CHECK(rc == NT_BADNAME);
                } else {
                    CHECK(rc == NT_OK);
                    if (m < 0) {
                        if (model_len == model_cap) {
                            model_cap = model_cap ? 2 * model_cap : 256;
                            model = realloc(model, model_cap * sizeof *model);
                            CHECK(model != NULL);
                        }
                        m = (long)model_len++;
                        memcpy(model[m].name, name, n);
                        model[m].n = n;
                    }
                    model[m].v = v;
                }
            } else if (kind == 2) {
                int rc = nt_discard(&t, name, n);
                if (n < 1 || n > NT_MAX_NAME) {
                    CHECK(rc == NT_BADNAME);
                } else {
                    CHECK(rc == (m >= 0));
                    if (m >= 0)
                        model[m] = model[--model_len];
                }
            } else if (kind == 3) {
                uint32_t v = 0;
                int rc = nt_get(&t, name, n, &v);
                if (n < 1 || n > NT_MAX_NAME)
                    CHECK(rc == NT_BADNAME);
                else
                    CHECK(rc == (m >= 0) && (m < 0 || v == model[m].v));
            } else { /* 4, 5: match */
                size_t at = 0, model_at = 0;
                long v = nt_match(&t, name, n, &at), expected = model_match(name, n, &model_at);
                CHECK(v == expected && (v < 0 || at == model_at));
            }
        }
        CHECK(t.used == model_len);
    }
    nt_release(&t);
    return 0;
}
