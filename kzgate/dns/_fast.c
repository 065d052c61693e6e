/*
 * The UDP hot path in C: block answers and cache hits, in batches of datagrams.
 *
 * A compiled twin of the common case of kzgate/dns/engine.py, which stays the
 * reference (tests compare the two byte for byte). It reads the engine's own
 * Python structures (the policy dict, the cache dict, the block plans), so
 * there is one policy and one cache whichever path answers. Anything it is not
 * sure to answer exactly as the engine would (a malformed query, an opcode or
 * OPT it does not handle, a forward, a CNAME into a restricted name, an answer
 * that would need TC, a structure of an unexpected type) goes back to Python
 * untouched: one odd query costs its own trip through the engine, never the
 * batch it came in.
 *
 * Why C: on a 20k q/s load the per-packet cost of the interpreter (cold after
 * every wake-up) and of one recvfrom+sendto pair per query were most of the
 * CPU; recvmmsg/sendmmsg answer a burst with two system calls.
 *
 * The parts that touch no Python object live in Python-free headers that the
 * libFuzzer harnesses (tests/fuzz/c) build on their own: query_parse.h reads
 * the query, ../nametable_core.h is the policy's hash table.
 *
 * Everything runs on the event loop's thread with the GIL held. Only public
 * CPython API: the module builds on 3.11 to 3.13 with -Wall -Wextra -Werror
 * (tests/unit/test_native_build.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <stdint.h>
#include <sys/socket.h>

#include "query_parse.h"

#define NT_MALLOC PyMem_Malloc
#define NT_CALLOC PyMem_Calloc
#define NT_REALLOC PyMem_Realloc
#define NT_FREE PyMem_Free
#include "../nametable_core.h"

/* setup.py passes the SHA-256 of the C sources it compiled (tests/unit/test_native_build.py
 * compares it with the files on disk): a build from anything else says so. */
#ifndef KZGATE_SOURCE_SHA256
#define KZGATE_SOURCE_SHA256 "unknown"
#endif
#ifndef KZGATE_SOURCE_FILES
#define KZGATE_SOURCE_FILES ""
#endif

#define BATCH 32  /* datagrams per recvmmsg/sendmmsg */
#define ROUNDS 8  /* batches per call: then back to the event loop */
/* The largest datagram UDP carries (its length field is 16 bits; 65,507 octets of
 * payload over IPv4, 65,527 over IPv6), so no query is ever cut: every size is
 * answered as the pure-Python listener answers it. Only the pages a datagram
 * touches are ever resident. */
#define IN_SIZE 65535
#define OUT_SIZE EDNS_UDP_SIZE /* no answer from here is longer (max_size caps it) */

/* The engine's structures, read from the view tuple the engine keeps. */
typedef struct NameTable NameTable;

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
    unsigned char inbuf[BATCH][IN_SIZE];
    struct mmsghdr out[BATCH];
    struct iovec out_iov[BATCH];
    unsigned char outbuf[BATCH][OUT_SIZE];
} Batch;

static Batch batch;
static int busy; /* serve() is not reentrant: its buffers are static */

static PyObject *s_reply, *s_ttl_offsets, *s_ttls, *s_inserted, *s_expires, *s_targets,
    *s_blocked, *s_cached, *s_dropped, *s_cache_hits;


/* ---- NameTable: the policy's names (nametable_core.h) as a Python type ---- */

struct NameTable {
    PyObject_HEAD
    nt_table core;
};

static PyTypeObject NameTableType;

/* The exception for an error code of nametable_core.h; NULL. */
static PyObject *table_error(int rc)
{
    if (rc == NT_NOMEM)
        return PyErr_NoMemory();
    if (rc == NT_FULL)
        PyErr_SetString(PyExc_MemoryError, "name table arena is full");
    else
        PyErr_SetString(PyExc_ValueError, "a wire-form name is 1 to 255 octets");
    return NULL;
}

static int name_arg(PyObject *obj, const unsigned char **p, size_t *n)
{
    if (!PyBytes_Check(obj)) {
        PyErr_SetString(PyExc_TypeError, "a wire-form name (bytes) expected");
        return -1;
    }
    Py_ssize_t len = PyBytes_GET_SIZE(obj);
    if (!nt_name_ok((size_t)len)) {
        table_error(NT_BADNAME);
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
    int rc = nt_set(&t->core, name, n, (uint32_t)value);
    if (rc < 0)
        return table_error(rc);
    Py_RETURN_NONE;
}

static PyObject *NameTable_discard(NameTable *t, PyObject *arg)
{
    const unsigned char *name;
    size_t n;
    if (name_arg(arg, &name, &n) < 0)
        return NULL;
    int rc = nt_discard(&t->core, name, n);
    if (rc < 0)
        return table_error(rc);
    return PyBool_FromLong(rc);
}

static PyObject *NameTable_get(NameTable *t, PyObject *arg)
{
    const unsigned char *name;
    size_t n;
    uint32_t v;
    if (name_arg(arg, &name, &n) < 0)
        return NULL;
    int rc = nt_get(&t->core, name, n, &v);
    if (rc < 0)
        return table_error(rc);
    if (rc == 0)
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLong(v);
}

static PyObject *NameTable_match(NameTable *t, PyObject *arg)
{
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "a wire-form name (bytes) expected");
        return NULL;
    }
    size_t at = 0;
    long v = nt_match(&t->core, (const unsigned char *)PyBytes_AS_STRING(arg),
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
    size_t i = 0, n;
    const unsigned char *name;
    uint32_t v;
    while (nt_next(&t->core, &i, &name, &n, &v)) {
        PyObject *item = Py_BuildValue("(y#k)", (const char *)name, (Py_ssize_t)n, (unsigned long)v);
        if (item == NULL || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(item);
    }
    return out;
}

static PyObject *NameTable_clear(NameTable *t, PyObject *Py_UNUSED(ignored))
{
    int rc = nt_reset(&t->core);
    if (rc < 0)
        return table_error(rc);
    Py_RETURN_NONE;
}

static PyObject *NameTable_nbytes(NameTable *t, void *Py_UNUSED(closure))
{
    return PyLong_FromSize_t(sizeof *t + nt_nbytes(&t->core));
}

static Py_ssize_t NameTable_len(NameTable *t) { return (Py_ssize_t)t->core.used; }

static PyObject *NameTable_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *no_keywords[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, ":NameTable", no_keywords))
        return NULL;
    /* A per-table seed: which names collide is not predictable from outside. */
    uint64_t seed;
    PyObject *os = PyImport_ImportModule("os");
    PyObject *rnd = os ? PyObject_CallMethod(os, "urandom", "i", 8) : NULL;
    Py_XDECREF(os);
    if (rnd == NULL || !PyBytes_Check(rnd) || PyBytes_GET_SIZE(rnd) != 8) {
        if (rnd != NULL && !PyErr_Occurred())
            PyErr_SetString(PyExc_SystemError, "os.urandom(8) did not give 8 octets");
        Py_XDECREF(rnd);
        return NULL;
    }
    memcpy(&seed, PyBytes_AS_STRING(rnd), 8);
    Py_DECREF(rnd);
    NameTable *t = (NameTable *)type->tp_alloc(type, 0);
    if (t == NULL)
        return NULL;
    if (nt_init(&t->core, seed) < 0) {
        Py_DECREF(t);
        return PyErr_NoMemory();
    }
    return (PyObject *)t;
}

static void NameTable_dealloc(NameTable *t)
{
    nt_release(&t->core);
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


/* ---- Answers from the engine's structures ----
 *
 * Each helper returns 1 (answered into ``out``), 0 (the engine's to answer) or -1
 * (a Python error, e.g. a structure of an unexpected type); answer() turns -1
 * into 0, so an error costs this one query a trip through the engine. */

/* The policy's match for a lower-case wire name: 1 with its InstructionRef (borrowed)
 * in ``ref`` and the offset of the matching suffix in ``at``; 0 when nothing matches. */
static int match(const View *v, const unsigned char *name, size_t len, size_t *at, PyObject **ref)
{
    size_t off = 0;
    long value = nt_match(&v->names->core, name, len, &off);
    if (value < 0)
        return 0;
    if (value >= PyList_GET_SIZE(v->refs)) {
        PyErr_SetString(PyExc_IndexError, "name table value without an instruction");
        return -1;
    }
    *at = off;
    *ref = PyList_GET_ITEM(v->refs, value);
    return 1;
}

/* BlockAnswers.answer for one restricted name. */
static int block_answer(View *v, const unsigned char *q, const Query *qy, PyObject *ref,
                        size_t soa_owner, unsigned char *out, size_t out_cap, size_t *out_len)
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
    if (soa < 0 || ((rcode == -1 || ancount == -1) && PyErr_Occurred()))
        return -1;
    if (!PyBytes_Check(an) || rcode < 0 || rcode > 15 || ancount < 0 || ancount > 0xFFFF)
        return 0;
    size_t qlen = qy->qend - DNS_HEADER, an_len = (size_t)PyBytes_GET_SIZE(an);
    size_t soa_len = soa ? 2 + (size_t)PyBytes_GET_SIZE(v->soa_tail) : 0;
    size_t body = qlen + an_len + soa_len;
    const char *opt = NULL;
    size_t opt_len = 0;
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
        opt_len = (size_t)PyBytes_GET_SIZE(o);
    }
    size_t total = DNS_HEADER + body + opt_len;
    if (total > qy->max_size || total > out_cap) /* TC, or a shortened EDE text: the engine's */
        return 0;
    unsigned flags = DNS_QR | DNS_RA | (unsigned)rcode | (qy->flags & (DNS_OPCODE | DNS_RD | DNS_CD));
    out[0] = q[0];
    out[1] = q[1];
    dns_put16(out + 2, flags);
    dns_put16(out + 4, 1);
    dns_put16(out + 6, (unsigned)ancount);
    dns_put16(out + 8, soa ? 1 : 0);
    dns_put16(out + 10, qy->edns ? 1 : 0);
    unsigned char *p = out + DNS_HEADER;
    memcpy(p, q + DNS_HEADER, qlen);
    p += qlen;
    memcpy(p, PyBytes_AS_STRING(an), an_len);
    p += an_len;
    if (soa) {
        dns_put16(p, 0xC000 | (unsigned)soa_owner);
        memcpy(p + 2, PyBytes_AS_STRING(v->soa_tail), soa_len - 2);
        p += soa_len;
    }
    if (opt_len) {
        memcpy(p, opt, opt_len);
        p += opt_len;
    }
    *out_len = (size_t)(p - out);
    v->blocked++;
    return 1;
}

/* An attribute of a cache entry; NULL with no error when it is not of the type the
 * engine stores there (the engine then answers from the entry, or fails alone). */
static PyObject *attr(PyObject *obj, PyObject *name, int (*check)(PyObject *))
{
    PyObject *value = PyObject_GetAttr(obj, name);
    if (value != NULL && !check(value))
        Py_CLEAR(value);
    return value;
}

static int is_bytes(PyObject *o) { return PyBytes_Check(o); }
static int is_tuple(PyObject *o) { return PyTuple_Check(o); }
static int is_float(PyObject *o) { return PyFloat_Check(o); }

/* A cache hit made the client's (Engine._to_client). */
static int cached_answer(View *v, const unsigned char *q, const Query *qy, double now,
                         unsigned char *out, size_t out_cap, size_t *out_len)
{
    PyObject *name = PyBytes_FromStringAndSize((const char *)qy->name, (Py_ssize_t)qy->name_len);
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
        PyObject *t = PyTuple_GET_ITEM(targets, i), *ref;
        size_t at;
        if (!PyBytes_Check(t) || PyBytes_GET_SIZE(t) < 1) {
            result = 0;
            goto done;
        }
        int hit = match(v, (const unsigned char *)PyBytes_AS_STRING(t), (size_t)PyBytes_GET_SIZE(t),
                        &at, &ref);
        if (hit != 0) { /* blocked_cname: the engine's answer */
            result = hit < 0 ? -1 : 0;
            goto done;
        }
    }
    if (!(reply = attr(entry, s_reply, is_bytes)) || !(inserted = attr(entry, s_inserted, is_float))
        || !(offsets = attr(entry, s_ttl_offsets, is_tuple)) || !(ttls = attr(entry, s_ttls, is_tuple)))
        goto done;
    size_t len = (size_t)PyBytes_GET_SIZE(reply), qlen = qy->qend - DNS_HEADER;
    Py_ssize_t count = PyTuple_GET_SIZE(offsets);
    if (len > qy->max_size || len > out_cap || len < DNS_HEADER + qlen || PyTuple_GET_SIZE(ttls) != count) {
        result = 0; /* TC for this client, or not a shape to patch here */
        goto done;
    }
    double age = now - PyFloat_AS_DOUBLE(inserted);
    if (!(age > -1.0 && age < 9e18)) { /* inserted after now, NaN, or no long long: the engine's */
        result = 0;
        goto done;
    }
    long long elapsed = (long long)age; /* int(): toward zero, as the engine ages */
    memcpy(out, PyBytes_AS_STRING(reply), len);
    for (Py_ssize_t i = 0; i < count; i++) {
        long long off = PyLong_AsLongLong(PyTuple_GET_ITEM(offsets, i));
        long long ttl = PyLong_AsLongLong(PyTuple_GET_ITEM(ttls, i));
        if ((off == -1 || ttl == -1) && PyErr_Occurred())
            goto done;
        if (off < 0 || (unsigned long long)off + 4 > len || ttl < 0 || ttl > 0xFFFFFFFFLL) {
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
    memcpy(out + DNS_HEADER, q + DNS_HEADER, qlen);          /* its question's exact case */
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

/* 1: answered into ``out`` (at most ``out_cap`` octets); 0: the engine's to answer.
 * Never an error: whatever this path did not expect is the engine's, for this one
 * query, and the batch goes on. */
static int answer(View *v, const unsigned char *q, size_t n, double now, unsigned char *out,
                  size_t out_cap, size_t *out_len)
{
    Query qy;
    if (!query_parse(q, n, &qy))
        return 0;
    size_t at = 0;
    PyObject *ref = NULL;
    int r = match(v, qy.name, qy.name_len, &at, &ref);
    if (r > 0)
        r = block_answer(v, q, &qy, ref, DNS_HEADER + at, out, out_cap, out_len);
    else if (r == 0)
        r = cached_answer(v, q, &qy, now, out, out_cap, out_len);
    if (r < 0) { /* every helper returns -1 on its errors (PyErr_Occurred() costs ~10 ns here) */
        PyErr_Clear();
        return 0;
    }
    return r;
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

/* Append (datagram, sender) to *misses (created on first use); -1 on a Python error. */
static int hand_back(PyObject **misses, const unsigned char *data, size_t n,
                     const struct sockaddr_storage *from)
{
    if (*misses == NULL && (*misses = PyList_New(0)) == NULL)
        return -1;
    PyObject *addr = peer(from);
    if (addr == NULL)
        return -1;
    PyObject *item = Py_BuildValue("(y#N)", (const char *)data, (Py_ssize_t)n, addr);
    if (item == NULL)
        return -1;
    int rc = PyList_Append(*misses, item);
    Py_DECREF(item);
    return rc;
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
            batch.in_iov[i].iov_len = IN_SIZE;
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
            size_t n = batch.in[i].msg_len;
            if (h->msg_flags & MSG_TRUNC) { /* longer than any UDP datagram: not a query */
                dropped++;
                continue;
            }
            size_t out_len = 0;
            if (answer(&v, batch.inbuf[i], n, now, batch.outbuf[nout], OUT_SIZE, &out_len)) {
                struct msghdr *o = &batch.out[nout].msg_hdr;
                batch.out_iov[nout].iov_base = batch.outbuf[nout];
                batch.out_iov[nout].iov_len = out_len;
                memset(o, 0, sizeof *o);
                o->msg_iov = &batch.out_iov[nout];
                o->msg_iovlen = 1;
                o->msg_name = &batch.addr[i];
                o->msg_namelen = h->msg_namelen;
                nout++;
            } else if (hand_back(&misses, batch.inbuf[i], n, &batch.addr[i]) < 0) {
                send_all(fd, batch.out, nout); /* out of memory: what is answered still goes */
                goto error;
            }
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
    unsigned char out[OUT_SIZE];
    size_t out_len = 0;
    int r = answer(&v, (const unsigned char *)PyBytes_AS_STRING(args[0]), (size_t)PyBytes_GET_SIZE(args[0]),
                   now, out, sizeof out, &out_len);
    if (count(args[2], &v, 0) < 0)
        return NULL;
    if (r == 0)
        Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)out, (Py_ssize_t)out_len);
}

static PyMethodDef methods[] = {
    {"serve", (PyCFunction)(void (*)(void))serve, METH_FASTCALL, serve_doc},
    {"answer", (PyCFunction)(void (*)(void))answer_py, METH_FASTCALL, answer_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "kzgate.dns._fast",
    .m_doc = "The UDP hot path in C (see kzgate/dns/fastpath.py).",
    .m_size = -1,
    .m_methods = methods,
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
    if (PyModule_AddType(m, &NameTableType) < 0
        || PyModule_AddStringConstant(m, "SOURCE_SHA256", KZGATE_SOURCE_SHA256) < 0
        || PyModule_AddStringConstant(m, "SOURCE_FILES", KZGATE_SOURCE_FILES) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
