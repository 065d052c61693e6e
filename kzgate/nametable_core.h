/*
 * The NameTable's core over plain memory: lower-case wire-form names (1 to 255
 * octets) -> uint32 values, probed without allocating.
 *
 * Open addressing with linear probing over 8-octet slots: the upper 32 bits of
 * the name's hash, and the record's offset + 1 in an arena of
 * [value u32][length u8][name] records. A probe that misses usually reads one
 * cache line; a dict of bytes keys reads three (index, entry, key object) and
 * costs twice the memory.
 *
 * Pure C, no Python: kzgate/nametable.c wraps it as the NameTable type (with
 * PyMem allocators, defined before the include), and the libFuzzer harness in
 * tests/fuzz/c drives it against a model. Errors are return codes.
 */
#ifndef KZGATE_NAMETABLE_CORE_H
#define KZGATE_NAMETABLE_CORE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifndef NT_MALLOC
#include <stdlib.h>
#define NT_MALLOC malloc
#define NT_CALLOC calloc
#define NT_REALLOC realloc
#define NT_FREE free
#endif

#define NT_SLOT_EMPTY 0u
#define NT_SLOT_TOMB 0xFFFFFFFFu
#define NT_MAX_LOAD_NUM 7
#define NT_MAX_LOAD_DEN 10
#define NT_MIN_CAP 16
#define NT_ARENA_MAX 0xFFFFFFF0u /* record offsets + 1 are 32 bits, and never NT_SLOT_TOMB */
#define NT_MAX_NAME 255
#define NT_COMPACT_MIN ((size_t)1 << 20)

enum { NT_OK = 0, NT_NOMEM = -1, NT_FULL = -2, NT_BADNAME = -3 };

typedef struct {
    uint64_t *slots;
    size_t cap;          /* a power of two */
    size_t used, filled; /* live entries; live + tombstones */
    unsigned char *arena;
    size_t arena_len, arena_cap, garbage;
    size_t compact_min; /* removed octets before the arena is compacted */
    uint64_t seed;      /* per table: which names collide is not predictable from outside */
} nt_table;

static uint64_t nt_hash(const nt_table *t, const unsigned char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL ^ t->seed;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    h ^= h >> 33; /* murmur3's finalizer: FNV's low bits alone cluster */
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

static inline uint32_t nt_tag(uint64_t h) { return (uint32_t)(h >> 32) | 1u; } /* never 0 */

static inline int nt_name_ok(size_t n) { return n >= 1 && n <= NT_MAX_NAME; }

/* The slot holding ``name``, or (size_t)-1; ``free_at`` gets the first reusable slot. */
static size_t nt_find(const nt_table *t, const unsigned char *name, size_t n, uint64_t h,
                      size_t *free_at)
{
    size_t mask = t->cap - 1, i = (size_t)h & mask;
    uint32_t tag = nt_tag(h);
    if (free_at)
        *free_at = (size_t)-1;
    for (;;) {
        uint64_t s = t->slots[i];
        uint32_t ref = (uint32_t)s;
        if (ref == NT_SLOT_EMPTY) {
            if (free_at && *free_at == (size_t)-1)
                *free_at = i;
            return (size_t)-1;
        }
        if (ref == NT_SLOT_TOMB) {
            if (free_at && *free_at == (size_t)-1)
                *free_at = i;
        } else if ((uint32_t)(s >> 32) == tag) {
            const unsigned char *rec = t->arena + ref - 1;
            if (rec[4] == n && memcmp(rec + 5, name, n) == 0)
                return i;
        }
        i = (i + 1) & mask;
    }
}

static inline uint32_t nt_slot_value(const nt_table *t, uint64_t slot)
{
    uint32_t v;
    memcpy(&v, t->arena + (uint32_t)slot - 1, 4);
    return v;
}

/* Rebuild into ``cap`` slots and a compacted arena; the table is unchanged on failure. */
static int nt_rebuild(nt_table *t, size_t cap)
{
    size_t arena_cap = t->arena_len - t->garbage + 64;
    uint64_t *slots = NT_CALLOC(cap, sizeof *slots);
    unsigned char *arena = NT_MALLOC(arena_cap);
    if (slots == NULL || arena == NULL) {
        NT_FREE(slots);
        NT_FREE(arena);
        return NT_NOMEM;
    }
    size_t len = 0, mask = cap - 1;
    for (size_t i = 0; i < t->cap; i++) {
        uint32_t ref = (uint32_t)t->slots[i];
        if (ref == NT_SLOT_EMPTY || ref == NT_SLOT_TOMB)
            continue;
        const unsigned char *rec = t->arena + ref - 1;
        size_t size = 5 + rec[4];
        memcpy(arena + len, rec, size);
        uint64_t h = nt_hash(t, rec + 5, rec[4]);
        size_t j = (size_t)h & mask;
        while ((uint32_t)slots[j] != NT_SLOT_EMPTY)
            j = (j + 1) & mask;
        slots[j] = ((uint64_t)nt_tag(h) << 32) | (uint64_t)(len + 1);
        len += size;
    }
    NT_FREE(t->slots);
    NT_FREE(t->arena);
    t->slots = slots;
    t->cap = cap;
    t->filled = t->used;
    t->arena = arena;
    t->arena_len = len;
    t->arena_cap = arena_cap;
    t->garbage = 0;
    return NT_OK;
}

/* Empty storage for a new or cleared table; the table is unchanged on failure. */
static int nt_reset(nt_table *t)
{
    uint64_t *slots = NT_CALLOC(NT_MIN_CAP, sizeof *slots);
    unsigned char *arena = NT_MALLOC(256);
    if (slots == NULL || arena == NULL) {
        NT_FREE(slots);
        NT_FREE(arena);
        return NT_NOMEM;
    }
    NT_FREE(t->slots);
    NT_FREE(t->arena);
    t->slots = slots;
    t->arena = arena;
    t->cap = NT_MIN_CAP;
    t->used = t->filled = t->arena_len = t->garbage = 0;
    t->arena_cap = 256;
    return NT_OK;
}

static int nt_init(nt_table *t, uint64_t seed)
{
    memset(t, 0, sizeof *t);
    t->seed = seed;
    t->compact_min = NT_COMPACT_MIN;
    return nt_reset(t);
}

static void nt_release(nt_table *t)
{
    NT_FREE(t->slots);
    NT_FREE(t->arena);
    t->slots = NULL;
    t->arena = NULL;
    t->cap = t->used = t->filled = t->arena_len = t->arena_cap = t->garbage = 0;
}

/* Add ``name`` with value ``v``, or change its value. */
static int nt_set(nt_table *t, const unsigned char *name, size_t n, uint32_t v)
{
    if (!nt_name_ok(n))
        return NT_BADNAME;
    uint64_t h = nt_hash(t, name, n);
    size_t free_at, at = nt_find(t, name, n, h, &free_at);
    if (at != (size_t)-1) {
        memcpy(t->arena + (uint32_t)t->slots[at] - 1, &v, 4);
        return NT_OK;
    }
    if ((t->filled + 1) * NT_MAX_LOAD_DEN > t->cap * NT_MAX_LOAD_NUM) {
        size_t cap = t->cap;
        while ((t->used + 1) * 2 > cap) /* at most half full after */
            cap *= 2;
        int rc = nt_rebuild(t, cap);
        if (rc < 0)
            return rc;
        nt_find(t, name, n, h, &free_at);
    }
    if (t->arena_len + 5 + n > t->arena_cap) {
        size_t cap = t->arena_cap + t->arena_cap / 4 + 5 + n; /* big blocks are remapped, not copied */
        if (cap > NT_ARENA_MAX)
            return NT_FULL;
        unsigned char *arena = NT_REALLOC(t->arena, cap);
        if (arena == NULL)
            return NT_NOMEM;
        t->arena = arena;
        t->arena_cap = cap;
    }
    unsigned char *rec = t->arena + t->arena_len;
    memcpy(rec, &v, 4);
    rec[4] = (unsigned char)n;
    memcpy(rec + 5, name, n);
    if ((uint32_t)t->slots[free_at] == NT_SLOT_EMPTY)
        t->filled++;
    t->slots[free_at] = ((uint64_t)nt_tag(h) << 32) | (uint64_t)(t->arena_len + 1);
    t->arena_len += 5 + n;
    t->used++;
    return NT_OK;
}

/* 1: ``name`` was there and is gone; 0: it was not there; < 0: an error. */
static int nt_discard(nt_table *t, const unsigned char *name, size_t n)
{
    if (!nt_name_ok(n))
        return NT_BADNAME;
    size_t at = nt_find(t, name, n, nt_hash(t, name, n), NULL);
    if (at == (size_t)-1)
        return 0;
    t->slots[at] = NT_SLOT_TOMB;
    t->used--;
    t->garbage += 5 + n;
    /* Removals leave records behind; compact once they are most of the arena. A
     * failed compaction leaves a correct table: the next removal tries again. */
    if (t->garbage > t->compact_min && t->garbage * 2 > t->arena_len)
        (void)nt_rebuild(t, t->cap);
    return 1;
}

/* 1 with its value in ``v``; 0: absent; < 0: an error. */
static int nt_get(const nt_table *t, const unsigned char *name, size_t n, uint32_t *v)
{
    if (!nt_name_ok(n))
        return NT_BADNAME;
    size_t at = nt_find(t, name, n, nt_hash(t, name, n), NULL);
    if (at == (size_t)-1)
        return 0;
    *v = nt_slot_value(t, t->slots[at]);
    return 1;
}

/* The value of the whole name or of its nearest listed parent, and the offset where
 * that suffix starts; -1 when none is listed. Any octets: reads only within ``n``. */
static long nt_match(const nt_table *t, const unsigned char *name, size_t n, size_t *at)
{
    size_t off = 0;
    while (n > 0 && off < n - 1) {
        size_t found = nt_find(t, name + off, n - off, nt_hash(t, name + off, n - off), NULL);
        if (found != (size_t)-1) {
            *at = off;
            return (long)nt_slot_value(t, t->slots[found]);
        }
        off += (size_t)name[off] + 1;
    }
    return -1;
}

/* Every entry once, in slot order: call with *i = 0 until it returns 0. */
static int nt_next(const nt_table *t, size_t *i, const unsigned char **name, size_t *n, uint32_t *v)
{
    for (; *i < t->cap; (*i)++) {
        uint32_t ref = (uint32_t)t->slots[*i];
        if (ref == NT_SLOT_EMPTY || ref == NT_SLOT_TOMB)
            continue;
        const unsigned char *rec = t->arena + ref - 1;
        *n = rec[4];
        *name = rec + 5;
        *v = nt_slot_value(t, t->slots[*i]);
        (*i)++;
        return 1;
    }
    return 0;
}

/* Memory held, in octets, besides the struct itself. */
static inline size_t nt_nbytes(const nt_table *t) { return t->cap * sizeof *t->slots + t->arena_cap; }

#endif
