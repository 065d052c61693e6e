/*
 * Answers from the engine's structures (a FastView): block answers for restricted
 * names and cache hits, byte for byte as kzgate/dns/engine.py builds them.
 *
 * Anything this path is not sure to answer exactly as the engine would (a
 * malformed query, an opcode or OPT it does not handle, a forward, a CNAME into a
 * restricted name, an answer that would need TC, a structure of an unexpected
 * type) goes back to Python untouched: one odd query costs its own trip through
 * the engine, never the batch it came in. query_parse.h reads the query without
 * Python; the policy's names are matched in the NameTable (../nametable.h).
 */
#include "fast.h"

#include <string.h>

#include "../nametable.h"
#include "query_parse.h"

/*
 * Each helper returns 1 (answered into ``out``), 0 (the engine's to answer) or -1
 * (a Python error, e.g. a structure of an unexpected type); kz_fast_answer turns -1
 * into 0, so an error costs this one query a trip through the engine.
 */

/* The policy's match for a lower-case wire name: 1 with its InstructionRef (borrowed)
 * in ``ref`` and the offset of the matching suffix in ``at``; 0 when nothing matches. */
static int match(const FastView *v, const unsigned char *name, size_t len, size_t *at, PyObject **ref)
{
    size_t off = 0;
    long value = kz_nametable_match(v->names, name, len, &off);
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
static int block_answer(const FastView *v, Tally *t, const unsigned char *q, const Query *qy, PyObject *ref,
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
    /* FastView checked every plan's shape; the dict is the engine's, so check again what is read */
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
    t->blocked++;
    return 1;
}

/* A slot of a cache entry; NULL with no error when it holds something other than what
 * the engine stores there (the engine then answers from the entry, or fails alone). */
static PyObject *slot(const FastView *v, PyObject *entry, enum EntrySlot which, int (*check)(PyObject *))
{
    PyObject *value = kz_fast_view_entry(v, entry, which);
    if (value != NULL && !check(value))
        Py_CLEAR(value);
    return value;
}

static int is_bytes(PyObject *o) { return PyBytes_Check(o); }
static int is_tuple(PyObject *o) { return PyTuple_Check(o); }
static int is_float(PyObject *o) { return PyFloat_Check(o); }

/* A cache hit made the client's (Engine._to_client). */
static int cached_answer(const FastView *v, Tally *t, const unsigned char *q, const Query *qy, double now,
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
    if (!Py_IS_TYPE(entry, (PyTypeObject *)v->entry_type)) /* the slots read below are its class's */
        return 0;
    Py_INCREF(entry);
    int result = -1;
    PyObject *expires = NULL, *inserted = NULL, *targets = NULL, *reply = NULL, *offsets = NULL,
             *ttls = NULL;
    if (!(expires = slot(v, entry, ENTRY_EXPIRES, is_float)))
        goto done;
    if (now >= PyFloat_AS_DOUBLE(expires)) { /* expired: the engine drops it and forwards */
        result = 0;
        goto done;
    }
    if (!(targets = slot(v, entry, ENTRY_TARGETS, is_tuple)))
        goto done;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(targets); i++) {
        PyObject *target = PyTuple_GET_ITEM(targets, i), *ref;
        size_t at;
        if (!PyBytes_Check(target) || PyBytes_GET_SIZE(target) < 1) {
            result = 0;
            goto done;
        }
        int hit = match(v, (const unsigned char *)PyBytes_AS_STRING(target), (size_t)PyBytes_GET_SIZE(target),
                        &at, &ref);
        if (hit != 0) { /* blocked_cname: the engine's answer */
            result = hit < 0 ? -1 : 0;
            goto done;
        }
    }
    if (!(reply = slot(v, entry, ENTRY_REPLY, is_bytes))
        || !(inserted = slot(v, entry, ENTRY_INSERTED, is_float))
        || !(offsets = slot(v, entry, ENTRY_TTL_OFFSETS, is_tuple))
        || !(ttls = slot(v, entry, ENTRY_TTLS, is_tuple)))
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
    t->cached++;
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

int kz_fast_answer(const FastView *v, Tally *t, const unsigned char *q, size_t n, double now,
                   unsigned char *out, size_t out_cap, size_t *out_len)
{
    Query qy;
    if (!query_parse(q, n, &qy))
        return 0;
    size_t at = 0;
    PyObject *ref = NULL;
    int r = match(v, qy.name, qy.name_len, &at, &ref);
    if (r > 0)
        r = block_answer(v, t, q, &qy, ref, DNS_HEADER + at, out, out_cap, out_len);
    else if (r == 0)
        r = cached_answer(v, t, q, &qy, now, out, out_cap, out_len);
    if (r < 0) { /* every helper returns -1 on its errors (PyErr_Occurred() costs ~10 ns here) */
        PyErr_Clear();
        return 0;
    }
    return r;
}

PyDoc_STRVAR(answer_doc,
"answer(data, now, view) -> bytes | None\n\n"
"The answer serve() would send for one query, or None when it would leave\n"
"the query to the engine; counted in the view's stats like serve().");

static PyObject *answer(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "answer(data: bytes, now, view)");
        return NULL;
    }
    double now = PyFloat_AsDouble(args[1]);
    if (PyErr_Occurred())
        return NULL;
    FastView *v = kz_fast_view_arg(args[2], "answer()");
    if (v == NULL)
        return NULL;
    unsigned char out[EDNS_UDP_SIZE]; /* no answer from here is longer (max_size caps it) */
    size_t out_len = 0;
    Tally t = {0, 0, 0};
    int r = kz_fast_answer(v, &t, (const unsigned char *)PyBytes_AS_STRING(args[0]),
                           (size_t)PyBytes_GET_SIZE(args[0]), now, out, sizeof out, &out_len);
    if (kz_fast_view_count(v, &t) < 0)
        return NULL;
    if (r == 0)
        Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)out, (Py_ssize_t)out_len);
}

static PyMethodDef methods[] = {
    {"answer", (PyCFunction)(void (*)(void))answer, METH_FASTCALL, answer_doc},
    {NULL, NULL, 0, NULL},
};

int kz_fast_answer_add(PyObject *module) { return PyModule_AddFunctions(module, methods); }
