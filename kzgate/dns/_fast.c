/*
 * The UDP hot path in C: block answers and cache hits, in batches of datagrams.
 *
 * A compiled twin of the common case of kzgate/dns/engine.py, which stays the
 * reference (tests compare the two byte for byte). It reads the engine's own
 * Python structures (the policy dict, the cache dict, the block plans), so
 * there is one policy and one cache whichever path answers. Anything it is not
 * sure to answer exactly as the engine would (a malformed query, an opcode or
 * OPT it does not handle, a forward, a CNAME into a restricted name, an answer
 * that would need TC) goes back to Python untouched.
 *
 * Why C: on a 20k q/s load the per-packet cost of the interpreter (cold after
 * every wake-up) and of one recvfrom+sendto pair per query were most of the
 * CPU; recvmmsg/sendmmsg answer a burst with two system calls.
 *
 * Everything runs on the event loop's thread with the GIL held.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <stdint.h>
#include <sys/socket.h>

#define BATCH 32        /* datagrams per recvmmsg/sendmmsg */
#define ROUNDS 8        /* batches per call: then back to the event loop */
#define BUF_SIZE 4096   /* a longer query is dropped (counted) */
#define EDNS_UDP_SIZE 1232

#define QR 0x8000
#define OPCODE 0x7800
#define RD 0x0100
#define RA 0x0080
#define CD 0x0010
#define T_OPT 41

/* The engine's structures, read from the view tuple the engine keeps. */
typedef struct NameTable NameTable;
static long table_match(const NameTable *t, const unsigned char *name, size_t n, size_t *at);

typedef struct {
    NameTable *names;  /* lower-case wire name -> a number in refs */
    PyObject *refs;    /* list: number -> InstructionRef */
    PyObject *entries; /* dict: (qname, qtype, qclass, do, edns) -> cache Entry */
    PyObject *plans;   /* dict: qtype or None -> (rcode, answer RRs, ancount, soa?) */
    PyObject *soa_tail; /* bytes: the SOA RR after its owner */
    PyObject *opts;    /* dict: id(ref) -> (ref, OPT+EDE, OPT+EDE with DO) */
    long blocked, cached;
} View;

enum { VIEW_NAMES, VIEW_REFS, VIEW_ENTRIES, VIEW_PLANS, VIEW_SOA_TAIL, VIEW_OPTS, VIEW_VERDICTS, VIEW_STATS,
       VIEW_SIZE };

typedef struct {
    struct mmsghdr in[BATCH];
    struct iovec in_iov[BATCH];
    struct sockaddr_storage addr[BATCH];
    unsigned char inbuf[BATCH][BUF_SIZE];
    struct mmsghdr out[BATCH];
    struct iovec out_iov[BATCH];
    unsigned char outbuf[BATCH][BUF_SIZE];
} Batch;

static Batch batch;
static int busy; /* serve() is not reentrant: its buffers are static */

static PyObject *s_reply, *s_ttl_offsets, *s_ttls, *s_inserted, *s_expires, *s_targets,
    *s_blocked, *s_cached, *s_dropped, *s_cache_hits;

static inline unsigned u16(const unsigned char *p) { return (unsigned)p[0] << 8 | p[1]; }

static inline void put16(unsigned char *p, unsigned v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}


/* ---- NameTable: the policy's names, compact and probed without allocating ----
 *
 * Lower-case wire-form names (at most 255 octets) -> a uint32 value (the
 * PolicyIndex's number for the instruction). Open addressing with linear
 * probing over 8-octet slots: the upper 32 bits of the name's hash, and the
 * record's offset + 1 in an arena of [value u32][length u8][name] records. A
 * probe that misses usually reads one cache line; a dict of bytes keys reads
 * three (index, entry, key object) and costs twice the memory.
 */
#define SLOT_EMPTY 0u
#define SLOT_TOMB 0xFFFFFFFFu
#define MAX_LOAD_NUM 7
#define MAX_LOAD_DEN 10

struct NameTable {
    PyObject_HEAD
    uint64_t *slots;
    size_t cap; /* a power of two */
    size_t used, filled; /* live entries; live + tombstones */
    unsigned char *arena;
    size_t arena_len, arena_cap, garbage;
    uint64_t seed;
};

static PyTypeObject NameTableType;

static uint64_t name_hash(const NameTable *t, const unsigned char *p, size_t n)
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

static inline uint32_t slot_tag(uint64_t h) { return (uint32_t)(h >> 32) | 1u; } /* never 0 */

/* The slot holding ``name``, or (size_t)-1; ``free_at`` gets the first reusable slot. */
static size_t table_find(const NameTable *t, const unsigned char *name, size_t n, uint64_t h,
                         size_t *free_at)
{
    size_t mask = t->cap - 1, i = (size_t)h & mask;
    uint32_t tag = slot_tag(h);
    if (free_at)
        *free_at = (size_t)-1;
    for (;;) {
        uint64_t s = t->slots[i];
        uint32_t ref = (uint32_t)s;
        if (ref == SLOT_EMPTY) {
            if (free_at && *free_at == (size_t)-1)
                *free_at = i;
            return (size_t)-1;
        }
        if (ref == SLOT_TOMB) {
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

static inline uint32_t record_value(const NameTable *t, uint64_t slot)
{
    uint32_t v;
    memcpy(&v, t->arena + (uint32_t)slot - 1, 4);
    return v;
}

/* Rebuild into ``cap`` slots and a compacted arena. */
static int table_rebuild(NameTable *t, size_t cap)
{
    size_t arena_cap = t->arena_len - t->garbage + 64;
    uint64_t *slots = PyMem_Calloc(cap, sizeof *slots);
    unsigned char *arena = PyMem_Malloc(arena_cap);
    if (slots == NULL || arena == NULL) {
        PyMem_Free(slots);
        PyMem_Free(arena);
        PyErr_NoMemory();
        return -1;
    }
    size_t len = 0, mask = cap - 1;
    for (size_t i = 0; i < t->cap; i++) {
        uint32_t ref = (uint32_t)t->slots[i];
        if (ref == SLOT_EMPTY || ref == SLOT_TOMB)
            continue;
        const unsigned char *rec = t->arena + ref - 1;
        size_t size = 5 + rec[4];
        memcpy(arena + len, rec, size);
        uint64_t h = name_hash(t, rec + 5, rec[4]);
        size_t j = (size_t)h & mask;
        while ((uint32_t)slots[j] != SLOT_EMPTY)
            j = (j + 1) & mask;
        slots[j] = ((uint64_t)slot_tag(h) << 32) | (uint64_t)(len + 1);
        len += size;
    }
    PyMem_Free(t->slots);
    PyMem_Free(t->arena);
    t->slots = slots;
    t->cap = cap;
    t->filled = t->used;
    t->arena = arena;
    t->arena_len = len;
    t->arena_cap = arena_cap;
    t->garbage = 0;
    return 0;
}

static int name_arg(PyObject *obj, const unsigned char **p, size_t *n)
{
    if (!PyBytes_Check(obj)) {
        PyErr_SetString(PyExc_TypeError, "a wire-form name (bytes) expected");
        return -1;
    }
    Py_ssize_t len = PyBytes_GET_SIZE(obj);
    if (len < 1 || len > 255) {
        PyErr_SetString(PyExc_ValueError, "a wire-form name is 1 to 255 octets");
        return -1;
    }
    *p = (const unsigned char *)PyBytes_AS_STRING(obj);
    *n = (size_t)len;
    return 0;
}

static PyObject *NameTable_set(NameTable *t, PyObject *const *args, Py_ssize_t nargs)
{
    const unsigned char *name;
    size_t n;
    if (nargs != 2 || name_arg(args[0], &name, &n) < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "set(name, value)");
        return NULL;
    }
    unsigned long value = PyLong_AsUnsignedLong(args[1]);
    if (value == (unsigned long)-1 && PyErr_Occurred())
        return NULL;
    if (value > 0xFFFFFFFFUL) {
        PyErr_SetString(PyExc_OverflowError, "a value is at most 2**32 - 1");
        return NULL;
    }
    uint32_t v = (uint32_t)value;
    uint64_t h = name_hash(t, name, n);
    size_t free_at, at = table_find(t, name, n, h, &free_at);
    if (at != (size_t)-1) {
        memcpy(t->arena + (uint32_t)t->slots[at] - 1, &v, 4);
        Py_RETURN_NONE;
    }
    if ((t->filled + 1) * MAX_LOAD_DEN > t->cap * MAX_LOAD_NUM) {
        size_t cap = t->cap;
        while ((t->used + 1) * 2 > cap) /* at most half full after */
            cap *= 2;
        if (table_rebuild(t, cap) < 0)
            return NULL;
        table_find(t, name, n, h, &free_at);
    }
    if (t->arena_len + 5 + n > t->arena_cap) {
        size_t cap = t->arena_cap + t->arena_cap / 4 + 5 + n; /* big blocks are remapped, not copied */
        if (cap > 0xFFFFFFF0u) {
            PyErr_SetString(PyExc_MemoryError, "name table arena is full");
            return NULL;
        }
        unsigned char *arena = PyMem_Realloc(t->arena, cap);
        if (arena == NULL)
            return PyErr_NoMemory();
        t->arena = arena;
        t->arena_cap = cap;
    }
    unsigned char *rec = t->arena + t->arena_len;
    memcpy(rec, &v, 4);
    rec[4] = (unsigned char)n;
    memcpy(rec + 5, name, n);
    if ((uint32_t)t->slots[free_at] == SLOT_EMPTY)
        t->filled++;
    t->slots[free_at] = ((uint64_t)slot_tag(h) << 32) | (uint64_t)(t->arena_len + 1);
    t->arena_len += 5 + n;
    t->used++;
    Py_RETURN_NONE;
}

/* The slot of the name in ``arg`` ((size_t)-1: absent), its length in ``n``; -2 on error. */
static size_t find_arg(const NameTable *t, PyObject *arg, size_t *n)
{
    const unsigned char *name;
    if (name_arg(arg, &name, n) < 0)
        return (size_t)-2;
    return table_find(t, name, *n, name_hash(t, name, *n), NULL);
}

static PyObject *NameTable_discard(NameTable *t, PyObject *arg)
{
    size_t n, at = find_arg(t, arg, &n);
    if (at == (size_t)-2)
        return NULL;
    if (at == (size_t)-1)
        Py_RETURN_FALSE;
    t->slots[at] = SLOT_TOMB;
    t->used--;
    t->garbage += 5 + n;
    /* Removals leave records behind; compact once they are most of the arena. */
    if (t->garbage > (1u << 20) && t->garbage * 2 > t->arena_len && table_rebuild(t, t->cap) < 0)
        return NULL;
    Py_RETURN_TRUE;
}

static PyObject *NameTable_get(NameTable *t, PyObject *arg)
{
    size_t n, at = find_arg(t, arg, &n);
    if (at == (size_t)-2)
        return NULL;
    if (at == (size_t)-1)
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLong(record_value(t, t->slots[at]));
}

/* The value of the whole name or of its nearest listed parent, and the offset where
 * that suffix starts; -1 when none is listed. Reads only within ``n`` octets. */
static long table_match(const NameTable *t, const unsigned char *name, size_t n, size_t *at)
{
    size_t off = 0;
    while (n > 0 && off < n - 1) {
        size_t found = table_find(t, name + off, n - off, name_hash(t, name + off, n - off), NULL);
        if (found != (size_t)-1) {
            *at = off;
            return (long)record_value(t, t->slots[found]);
        }
        off += (size_t)name[off] + 1;
    }
    return -1;
}

static PyObject *NameTable_match(NameTable *t, PyObject *arg)
{
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "a wire-form name (bytes) expected");
        return NULL;
    }
    size_t at = 0;
    long v = table_match(t, (const unsigned char *)PyBytes_AS_STRING(arg),
                         (size_t)PyBytes_GET_SIZE(arg), &at);
    if (v < 0)
        Py_RETURN_NONE;
    return Py_BuildValue("(nk)", (Py_ssize_t)at, (unsigned long)v);
}

static PyObject *NameTable_items(NameTable *t, PyObject *Py_UNUSED(ignored))
{
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < t->cap; i++) {
        uint32_t ref = (uint32_t)t->slots[i];
        if (ref == SLOT_EMPTY || ref == SLOT_TOMB)
            continue;
        const unsigned char *rec = t->arena + ref - 1;
        PyObject *item = Py_BuildValue("(y#k)", (const char *)rec + 5, (Py_ssize_t)rec[4],
                                       (unsigned long)record_value(t, t->slots[i]));
        if (item == NULL || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(item);
    }
    return out;
}

static int table_init_storage(NameTable *t, size_t cap)
{
    PyMem_Free(t->slots);
    PyMem_Free(t->arena);
    t->slots = PyMem_Calloc(cap, sizeof *t->slots);
    t->arena = PyMem_Malloc(256);
    if (t->slots == NULL || t->arena == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    t->cap = cap;
    t->used = t->filled = t->arena_len = t->garbage = 0;
    t->arena_cap = 256;
    return 0;
}

static PyObject *NameTable_clear(NameTable *t, PyObject *Py_UNUSED(ignored))
{
    if (table_init_storage(t, 16) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *NameTable_nbytes(NameTable *t, void *Py_UNUSED(closure))
{
    return PyLong_FromSize_t(sizeof *t + t->cap * sizeof *t->slots + t->arena_cap);
}

static Py_ssize_t NameTable_len(NameTable *t) { return (Py_ssize_t)t->used; }

static PyObject *NameTable_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (!_PyArg_NoPositional("NameTable", args) || !_PyArg_NoKeywords("NameTable", kwds))
        return NULL;
    NameTable *t = (NameTable *)type->tp_alloc(type, 0);
    if (t == NULL)
        return NULL;
    /* A per-table seed: which names collide is not predictable from outside. */
    PyObject *os = PyImport_ImportModule("os");
    PyObject *rnd = os ? PyObject_CallMethod(os, "urandom", "i", 8) : NULL;
    Py_XDECREF(os);
    if (rnd == NULL || !PyBytes_Check(rnd) || PyBytes_GET_SIZE(rnd) != 8) {
        Py_XDECREF(rnd);
        Py_DECREF(t);
        return NULL;
    }
    memcpy(&t->seed, PyBytes_AS_STRING(rnd), 8);
    Py_DECREF(rnd);
    if (table_init_storage(t, 16) < 0) {
        Py_DECREF(t);
        return NULL;
    }
    return (PyObject *)t;
}

static void NameTable_dealloc(NameTable *t)
{
    PyMem_Free(t->slots);
    PyMem_Free(t->arena);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static PyMethodDef NameTable_methods[] = {
    {"set", (PyCFunction)(void (*)(void))NameTable_set, METH_FASTCALL,
     "set(name, value): add a wire-form name, or change its value"},
    {"discard", (PyCFunction)NameTable_discard, METH_O, "discard(name) -> whether it was there"},
    {"get", (PyCFunction)NameTable_get, METH_O, "get(name) -> its value, or None"},
    {"match", (PyCFunction)NameTable_match, METH_O,
     "match(qname) -> (offset, value) of the name or its nearest listed parent, or None"},
    {"items", (PyCFunction)NameTable_items, METH_NOARGS, "items() -> [(name, value)]"},
    {"clear", (PyCFunction)NameTable_clear, METH_NOARGS, "clear(): remove every name"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef NameTable_getset[] = {
    {"nbytes", (getter)NameTable_nbytes, NULL, "memory held, in octets", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods NameTable_as_sequence = {.sq_length = (lenfunc)NameTable_len};

static PyTypeObject NameTableType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kzgate.dns._fast.NameTable",
    .tp_basicsize = sizeof(NameTable),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Lower-case wire-form names -> uint32 values, matched with their parents.",
    .tp_new = NameTable_new,
    .tp_dealloc = (destructor)NameTable_dealloc,
    .tp_methods = NameTable_methods,
    .tp_getset = NameTable_getset,
    .tp_as_sequence = &NameTable_as_sequence,
};

/* The policy's match for a lower-case wire name: its InstructionRef (borrowed) and
 * the offset of the matching suffix; NULL with no error when nothing matches. */
static PyObject *match(const View *v, const unsigned char *name, Py_ssize_t len, Py_ssize_t *at)
{
    size_t off = 0;
    long value = table_match(v->names, name, (size_t)len, &off);
    if (value < 0)
        return NULL;
    if (value >= PyList_GET_SIZE(v->refs)) {
        PyErr_SetString(PyExc_IndexError, "name table value without an instruction");
        return NULL;
    }
    *at = (Py_ssize_t)off;
    return PyList_GET_ITEM(v->refs, value);
}

/* A query's header and question, read as wire.parse_query reads them. */
typedef struct {
    unsigned flags, qtype, qclass;
    Py_ssize_t qend;      /* past QTYPE and QCLASS */
    Py_ssize_t name_len;  /* with the root octet */
    unsigned char name[256]; /* lower-case */
    int edns, do_bit;
    Py_ssize_t max_size;
} Query;

/* 1: a query this path answers; 0: leave it to the engine. */
static int parse(const unsigned char *q, Py_ssize_t n, Query *out)
{
    if (n < 12 || (q[2] & 0xF8)) /* no header; QR set or an opcode other than QUERY */
        return 0;
    if (u16(q + 4) != 1 || u16(q + 6) || u16(q + 8) || u16(q + 10) > 1)
        return 0;
    Py_ssize_t off = 12;
    for (;;) {
        if (off >= n)
            return 0;
        unsigned len = q[off];
        if (len == 0)
            break;
        if (len > 63 || off + 1 + (Py_ssize_t)len > n)
            return 0;
        /* Checked before the copy: ``name`` holds 255 octets with the root one. */
        if (off - 12 + 1 + (Py_ssize_t)len > 254)
            return 0;
        out->name[off - 12] = (unsigned char)len;
        for (unsigned i = 1; i <= len; i++) {
            unsigned char c = q[off + i];
            out->name[off - 12 + i] = (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
        }
        off += len + 1;
    }
    out->name[off - 12] = 0;
    out->name_len = off - 12 + 1;
    out->qend = off + 5;
    if (out->qend > n)
        return 0;
    out->flags = u16(q + 2);
    out->qtype = u16(q + off + 1);
    out->qclass = u16(q + off + 3);
    out->edns = out->do_bit = 0;
    out->max_size = 512;
    if (u16(q + 10) == 1) {
        /* Only the usual shape: one OPT, root owner, right after the question. */
        const unsigned char *opt = q + out->qend;
        if (n < out->qend + 11 || opt[0] != 0 || u16(opt + 1) != T_OPT)
            return 0;
        if (out->qend + 11 + (Py_ssize_t)u16(opt + 9) > n || opt[6] != 0) /* EDNS version 0 */
            return 0;
        unsigned size = u16(opt + 3);
        out->edns = 1;
        out->do_bit = (opt[7] & 0x80) != 0;
        size = size > 512 ? size : 512;
        out->max_size = size < EDNS_UDP_SIZE ? size : EDNS_UDP_SIZE;
    }
    return 1;
}

/* BlockAnswers.answer for one restricted name; 0 when the engine must build it. */
static int block_answer(View *v, const unsigned char *q, const Query *qy, PyObject *ref,
                        Py_ssize_t soa_owner, unsigned char *out, Py_ssize_t *out_len)
{
    PyObject *qtype = PyLong_FromLong((long)qy->qtype);
    if (qtype == NULL)
        return -1;
    PyObject *plan = PyDict_GetItemWithError(v->plans, qtype);
    Py_DECREF(qtype);
    if (plan == NULL) {
        if (PyErr_Occurred())
            return -1;
        plan = PyDict_GetItemWithError(v->plans, Py_None);
        if (plan == NULL)
            return PyErr_Occurred() ? -1 : 0;
    }
    if (!PyTuple_Check(plan) || PyTuple_GET_SIZE(plan) != 4)
        return 0;
    long rcode = PyLong_AsLong(PyTuple_GET_ITEM(plan, 0));
    PyObject *an = PyTuple_GET_ITEM(plan, 1);
    long ancount = PyLong_AsLong(PyTuple_GET_ITEM(plan, 2));
    int soa = PyObject_IsTrue(PyTuple_GET_ITEM(plan, 3));
    if (PyErr_Occurred() || soa < 0 || !PyBytes_Check(an) || !PyBytes_Check(v->soa_tail))
        return PyErr_Occurred() ? -1 : 0;
    Py_ssize_t qlen = qy->qend - 12, an_len = PyBytes_GET_SIZE(an);
    Py_ssize_t soa_len = soa ? 2 + PyBytes_GET_SIZE(v->soa_tail) : 0;
    Py_ssize_t body = qlen + an_len + soa_len;
    const char *opt = NULL;
    Py_ssize_t opt_len = 0;
    if (qy->edns) {
        PyObject *id = PyLong_FromVoidPtr(ref);
        if (id == NULL)
            return -1;
        PyObject *memo = PyDict_GetItemWithError(v->opts, id);
        Py_DECREF(id);
        if (memo == NULL)
            return PyErr_Occurred() ? -1 : 0; /* the engine builds and memoizes it */
        if (!PyTuple_Check(memo) || PyTuple_GET_SIZE(memo) != 3 || PyTuple_GET_ITEM(memo, 0) != ref)
            return 0;
        PyObject *o = PyTuple_GET_ITEM(memo, qy->do_bit ? 2 : 1);
        if (!PyBytes_Check(o))
            return 0;
        opt = PyBytes_AS_STRING(o);
        opt_len = PyBytes_GET_SIZE(o);
    }
    if (12 + body + opt_len > qy->max_size) /* TC, or a shortened EDE text: the engine's */
        return 0;
    unsigned flags = QR | RA | (unsigned)rcode | (qy->flags & (OPCODE | RD | CD));
    out[0] = q[0];
    out[1] = q[1];
    put16(out + 2, flags);
    put16(out + 4, 1);
    put16(out + 6, (unsigned)ancount);
    put16(out + 8, soa ? 1 : 0);
    put16(out + 10, qy->edns ? 1 : 0);
    unsigned char *p = out + 12;
    memcpy(p, q + 12, (size_t)qlen);
    p += qlen;
    memcpy(p, PyBytes_AS_STRING(an), (size_t)an_len);
    p += an_len;
    if (soa) {
        put16(p, 0xC000 | (unsigned)soa_owner);
        memcpy(p + 2, PyBytes_AS_STRING(v->soa_tail), (size_t)(soa_len - 2));
        p += soa_len;
    }
    if (opt_len) {
        memcpy(p, opt, (size_t)opt_len);
        p += opt_len;
    }
    *out_len = p - out;
    v->blocked++;
    return 1;
}

static PyObject *attr(PyObject *obj, PyObject *name, int (*check)(PyObject *))
{
    PyObject *value = PyObject_GetAttr(obj, name);
    if (value != NULL && !check(value)) {
        Py_DECREF(value);
        PyErr_SetString(PyExc_TypeError, "unexpected cache entry");
        return NULL;
    }
    return value;
}

static int is_bytes(PyObject *o) { return PyBytes_Check(o); }
static int is_tuple(PyObject *o) { return PyTuple_Check(o); }
static int is_float(PyObject *o) { return PyFloat_Check(o); }

/* A cache hit made the client's (Engine._to_client); 0 when the engine must answer. */
static int cached_answer(View *v, const unsigned char *q, const Query *qy, double now,
                         unsigned char *out, Py_ssize_t *out_len)
{
    PyObject *name = PyBytes_FromStringAndSize((const char *)qy->name, qy->name_len);
    if (name == NULL)
        return -1;
    PyObject *key = Py_BuildValue("(NkkOO)", name, (unsigned long)qy->qtype,
                                  (unsigned long)qy->qclass, qy->do_bit ? Py_True : Py_False,
                                  qy->edns ? Py_True : Py_False);
    if (key == NULL)
        return -1;
    PyObject *entry = PyDict_GetItemWithError(v->entries, key);
    Py_DECREF(key);
    if (entry == NULL)
        return PyErr_Occurred() ? -1 : 0;
    Py_INCREF(entry);
    int result = -1;
    PyObject *expires = NULL, *inserted = NULL, *targets = NULL, *reply = NULL, *offsets = NULL,
             *ttls = NULL;
    if (!(expires = attr(entry, s_expires, is_float)))
        goto done;
    if (now >= PyFloat_AS_DOUBLE(expires)) { /* expired: the engine drops it and forwards */
        result = 0;
        goto done;
    }
    if (!(targets = attr(entry, s_targets, is_tuple)))
        goto done;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(targets); i++) {
        PyObject *t = PyTuple_GET_ITEM(targets, i);
        Py_ssize_t at;
        if (!PyBytes_Check(t) || PyBytes_GET_SIZE(t) < 1) {
            result = 0;
            goto done;
        }
        PyObject *hit = match(v, (const unsigned char *)PyBytes_AS_STRING(t),
                              PyBytes_GET_SIZE(t), &at);
        if (hit != NULL || PyErr_Occurred()) { /* blocked_cname: the engine's answer */
            result = PyErr_Occurred() ? -1 : 0;
            goto done;
        }
    }
    if (!(reply = attr(entry, s_reply, is_bytes)) || !(inserted = attr(entry, s_inserted, is_float))
        || !(offsets = attr(entry, s_ttl_offsets, is_tuple)) || !(ttls = attr(entry, s_ttls, is_tuple)))
        goto done;
    Py_ssize_t len = PyBytes_GET_SIZE(reply), qlen = qy->qend - 12;
    Py_ssize_t count = PyTuple_GET_SIZE(offsets);
    if (len > qy->max_size || len < 12 + qlen || PyTuple_GET_SIZE(ttls) != count) {
        result = 0; /* TC for this client, or not a shape to patch here */
        goto done;
    }
    memcpy(out, PyBytes_AS_STRING(reply), (size_t)len);
    double age = now - PyFloat_AS_DOUBLE(inserted);
    long long elapsed = (long long)age; /* int(): toward zero, as the engine ages */
    if (elapsed < 0) { /* inserted after now: the engine decides */
        result = 0;
        goto done;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        long long off = PyLong_AsLongLong(PyTuple_GET_ITEM(offsets, i));
        long long ttl = PyLong_AsLongLong(PyTuple_GET_ITEM(ttls, i));
        if (PyErr_Occurred())
            goto done;
        if (off < 0 || off + 4 > len || ttl < 0 || ttl > 0xFFFFFFFFLL) {
            result = 0;
            goto done;
        }
        unsigned long long aged = ttl > elapsed ? (unsigned long long)(ttl - elapsed) : 0;
        out[off] = (unsigned char)(aged >> 24);
        out[off + 1] = (unsigned char)(aged >> 16);
        out[off + 2] = (unsigned char)(aged >> 8);
        out[off + 3] = (unsigned char)aged;
    }
    out[0] = q[0];
    out[1] = q[1];
    out[2] = (unsigned char)((out[2] & 0xFE) | (q[2] & 0x01)); /* the client's RD */
    memcpy(out + 12, q + 12, (size_t)qlen);                   /* its question's exact case */
    *out_len = len;
    v->cached++;
    result = 1;
done:
    Py_XDECREF(expires);
    Py_XDECREF(inserted);
    Py_XDECREF(targets);
    Py_XDECREF(reply);
    Py_XDECREF(offsets);
    Py_XDECREF(ttls);
    Py_DECREF(entry);
    return result;
}

/* 1: answered into ``out``; 0: the engine's to answer; -1: a Python error. */
static int answer(View *v, const unsigned char *q, Py_ssize_t n, double now, unsigned char *out,
                  Py_ssize_t *out_len)
{
    Query qy;
    if (!parse(q, n, &qy))
        return 0;
    Py_ssize_t at;
    PyObject *ref = match(v, qy.name, qy.name_len, &at);
    if (ref != NULL)
        return block_answer(v, q, &qy, ref, 12 + at, out, out_len);
    if (PyErr_Occurred())
        return -1;
    return cached_answer(v, q, &qy, now, out, out_len);
}

static int load_view(PyObject *view, View *v)
{
    if (!PyTuple_Check(view) || PyTuple_GET_SIZE(view) != VIEW_SIZE) {
        PyErr_SetString(PyExc_TypeError, "view: a tuple of the engine's structures expected");
        return -1;
    }
    PyObject *names = PyTuple_GET_ITEM(view, VIEW_NAMES);
    if (!PyObject_TypeCheck(names, &NameTableType) || !PyList_Check(PyTuple_GET_ITEM(view, VIEW_REFS))) {
        PyErr_SetString(PyExc_TypeError, "view: a NameTable and its list of refs expected");
        return -1;
    }
    v->names = (NameTable *)names;
    v->refs = PyTuple_GET_ITEM(view, VIEW_REFS);
    v->entries = PyTuple_GET_ITEM(view, VIEW_ENTRIES);
    v->plans = PyTuple_GET_ITEM(view, VIEW_PLANS);
    v->soa_tail = PyTuple_GET_ITEM(view, VIEW_SOA_TAIL);
    v->opts = PyTuple_GET_ITEM(view, VIEW_OPTS);
    if (!PyDict_Check(v->entries) || !PyDict_Check(v->plans)
        || !PyBytes_Check(v->soa_tail) || !PyDict_Check(v->opts)
        || !PyDict_Check(PyTuple_GET_ITEM(view, VIEW_VERDICTS))) {
        PyErr_SetString(PyExc_TypeError, "view: unexpected member types");
        return -1;
    }
    v->blocked = v->cached = 0;
    return 0;
}

/* obj[key] += n (a dict), or obj.key += n (``attr``). */
static int add_count(PyObject *obj, PyObject *key, long n, int attr)
{
    if (n == 0)
        return 0;
    PyObject *old = attr ? PyObject_GetAttr(obj, key) : PyDict_GetItemWithError(obj, key);
    if (old == NULL && (attr || PyErr_Occurred()))
        return -1;
    long base = 0;
    if (old != NULL) {
        base = PyLong_AsLong(old);
        if (attr)
            Py_DECREF(old); /* GetAttr's reference is new; the dict's is borrowed */
        if (base == -1 && PyErr_Occurred())
            return -1;
    }
    PyObject *value = PyLong_FromLong(base + n);
    if (value == NULL)
        return -1;
    int rc = attr ? PyObject_SetAttr(obj, key, value) : PyDict_SetItem(obj, key, value);
    Py_DECREF(value);
    return rc;
}

static int count(PyObject *view, const View *v, long dropped)
{
    PyObject *verdicts = PyTuple_GET_ITEM(view, VIEW_VERDICTS);
    if (add_count(verdicts, s_blocked, v->blocked, 0) < 0 || add_count(verdicts, s_cached, v->cached, 0) < 0
        || add_count(verdicts, s_dropped, dropped, 0) < 0)
        return -1;
    return add_count(PyTuple_GET_ITEM(view, VIEW_STATS), s_cache_hits, v->cached, 1);
}

static PyObject *peer(const struct sockaddr_storage *ss)
{
    char host[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        return Py_BuildValue("(si)", host, (int)ntohs(a->sin_port));
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        return Py_BuildValue("(siIk)", host, (int)ntohs(a->sin6_port),
                             (unsigned)ntohl(a->sin6_flowinfo), (unsigned long)a->sin6_scope_id);
    }
    Py_RETURN_NONE;
}

static void send_all(int fd, struct mmsghdr *msgs, int n)
{
    int sent = 0;
    while (sent < n) {
        int r = sendmmsg(fd, msgs + sent, (unsigned)(n - sent), MSG_DONTWAIT);
        if (r > 0)
            sent += r;
        else if (r < 0 && errno == EINTR)
            continue;
        else
            sent++; /* this answer cannot go (a full buffer, a gone peer): UDP drops it */
    }
}

PyDoc_STRVAR(serve_doc,
"serve(fd, now, view) -> list[(bytes, address)] | None\n\n"
"Read the datagrams waiting on the non-blocking UDP socket ``fd``, answer the\n"
"blocked names and cache hits, count them in the view's stats, and return the\n"
"queries left for the engine with their senders (None when there are none).");

static PyObject *serve(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "serve(fd, now, view)");
        return NULL;
    }
    int fd = (int)PyLong_AsLong(args[0]);
    double now = PyFloat_AsDouble(args[1]);
    if (PyErr_Occurred())
        return NULL;
    View v;
    if (load_view(args[2], &v) < 0)
        return NULL;
    if (busy)
        Py_RETURN_NONE;
    busy = 1;
    PyObject *misses = NULL;
    long dropped = 0;
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < BATCH; i++) {
            struct msghdr *h = &batch.in[i].msg_hdr;
            batch.in_iov[i].iov_base = batch.inbuf[i];
            batch.in_iov[i].iov_len = BUF_SIZE;
            memset(h, 0, sizeof *h);
            h->msg_iov = &batch.in_iov[i];
            h->msg_iovlen = 1;
            h->msg_name = &batch.addr[i];
            h->msg_namelen = sizeof batch.addr[i];
        }
        int got = recvmmsg(fd, batch.in, BATCH, MSG_DONTWAIT, NULL);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            continue; /* a queued ICMP error for an earlier answer: consumed, go on */
        }
        int nout = 0;
        for (int i = 0; i < got; i++) {
            const struct msghdr *h = &batch.in[i].msg_hdr;
            Py_ssize_t n = (Py_ssize_t)batch.in[i].msg_len;
            if (h->msg_flags & MSG_TRUNC) {
                dropped++;
                continue;
            }
            Py_ssize_t out_len = 0;
            int r = answer(&v, batch.inbuf[i], n, now, batch.outbuf[nout], &out_len);
            if (r < 0)
                goto error;
            if (r > 0) {
                struct msghdr *o = &batch.out[nout].msg_hdr;
                batch.out_iov[nout].iov_base = batch.outbuf[nout];
                batch.out_iov[nout].iov_len = (size_t)out_len;
                memset(o, 0, sizeof *o);
                o->msg_iov = &batch.out_iov[nout];
                o->msg_iovlen = 1;
                o->msg_name = &batch.addr[i];
                o->msg_namelen = h->msg_namelen;
                nout++;
                continue;
            }
            if (misses == NULL && (misses = PyList_New(0)) == NULL)
                goto error;
            PyObject *addr = peer(&batch.addr[i]);
            if (addr == NULL)
                goto error;
            PyObject *item = Py_BuildValue("(y#N)", (const char *)batch.inbuf[i], n, addr);
            if (item == NULL || PyList_Append(misses, item) < 0) {
                Py_XDECREF(item);
                goto error;
            }
            Py_DECREF(item);
        }
        send_all(fd, batch.out, nout);
        if (got < BATCH)
            break;
    }
    busy = 0;
    if (count(args[2], &v, dropped) < 0) {
        Py_XDECREF(misses);
        return NULL;
    }
    if (misses == NULL)
        Py_RETURN_NONE;
    return misses;
error:
    busy = 0;
    Py_XDECREF(misses);
    return NULL;
}

PyDoc_STRVAR(answer_doc,
"answer(data, now, view) -> bytes | None\n\n"
"The answer serve() would send for one query, or None when it would leave\n"
"the query to the engine; counted in the view's stats like serve().");

static PyObject *answer_py(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "answer(data: bytes, now, view)");
        return NULL;
    }
    double now = PyFloat_AsDouble(args[1]);
    if (PyErr_Occurred())
        return NULL;
    View v;
    if (load_view(args[2], &v) < 0)
        return NULL;
    unsigned char out[BUF_SIZE];
    Py_ssize_t out_len = 0;
    Py_ssize_t n = PyBytes_GET_SIZE(args[0]);
    if (n > BUF_SIZE)
        Py_RETURN_NONE;
    int r = answer(&v, (const unsigned char *)PyBytes_AS_STRING(args[0]), n, now, out, &out_len);
    if (r < 0)
        return NULL;
    if (count(args[2], &v, 0) < 0)
        return NULL;
    if (r == 0)
        Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)out, out_len);
}

static PyMethodDef methods[] = {
    {"serve", (PyCFunction)(void (*)(void))serve, METH_FASTCALL, serve_doc},
    {"answer", (PyCFunction)(void (*)(void))answer_py, METH_FASTCALL, answer_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "kzgate.dns._fast",
    "The UDP hot path in C (see kzgate/dns/fastpath.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__fast(void)
{
    struct { PyObject **slot; const char *text; } names[] = {
        {&s_reply, "reply"}, {&s_ttl_offsets, "ttl_offsets"}, {&s_ttls, "ttls"},
        {&s_inserted, "inserted"}, {&s_expires, "expires"}, {&s_targets, "targets"},
        {&s_blocked, "blocked"}, {&s_cached, "cached"}, {&s_dropped, "dropped"},
        {&s_cache_hits, "cache_hits"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (*names[i].slot == NULL && (*names[i].slot = PyUnicode_InternFromString(names[i].text)) == NULL)
            return NULL;
    }
    if (PyType_Ready(&NameTableType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    Py_INCREF(&NameTableType);
    if (PyModule_AddObject(m, "NameTable", (PyObject *)&NameTableType) < 0) {
        Py_DECREF(&NameTableType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
