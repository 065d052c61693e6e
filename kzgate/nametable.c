/*
 * The NameTable type: the policy's names (kzgate/policy.py) as a Python object,
 * over the plain hash table of nametable_core.h, with PyMem allocators.
 *
 * Lower-case wire-form names -> uint32 values, matched with their parents:
 * about 40 octets a name, and a probe allocates nothing and usually reads one
 * cache line. kzgate/nametable.py holds its dict twin and the protocol both
 * follow; the DNS fast path (dns/fast_answer.c) matches query names through
 * nametable.h without leaving C.
 */
#include "nametable.h"

#include <stdint.h>
#include <string.h>

#define NT_MALLOC PyMem_Malloc
#define NT_CALLOC PyMem_Calloc
#define NT_REALLOC PyMem_Realloc
#define NT_FREE PyMem_Free
#include "nametable_core.h"

typedef struct {
    PyObject_HEAD
    nt_table core;
} NameTable;

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

PyTypeObject kz_NameTableType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kzgate._native.NameTable",
    .tp_basicsize = sizeof(NameTable),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Lower-case wire-form names -> uint32 values, matched with their parents.",
    .tp_new = NameTable_new,
    .tp_dealloc = (destructor)NameTable_dealloc,
    .tp_methods = NameTable_methods,
    .tp_getset = NameTable_getset,
    .tp_as_sequence = &NameTable_as_sequence,
};

long kz_nametable_match(PyObject *table, const unsigned char *name, size_t n, size_t *at)
{
    return nt_match(&((NameTable *)table)->core, name, n, at);
}

int kz_nametable_add(PyObject *module)
{
    if (PyType_Ready(&kz_NameTableType) < 0)
        return -1;
    return PyModule_AddType(module, &kz_NameTableType);
}
