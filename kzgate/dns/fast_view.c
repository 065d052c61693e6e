/*
 * kzgate._native.FastView: the engine's structures that the C fast path reads,
 * by name.
 *
 * The engine builds one (Engine.fast_view) with keyword arguments only, and
 * everything the answers later rely on is checked here, once, with an error
 * that names the field: each member's type, the slots of the cache entries'
 * class, the counters' keys, the shape of every block plan. A field renamed,
 * dropped or moved on the Python side, or a structure of another shape, stops
 * the engine from being built instead of being misread per query. The members
 * are read-only after, so serve() and answer() read them without checking again.
 */
#include "fast.h"

#include <stdint.h>

#include "../nametable.h"

static PyObject *s_blocked, *s_cached, *s_dropped, *s_cache_hits;

static int is_list(PyObject *o) { return PyList_Check(o); }
static int is_dict(PyObject *o) { return PyDict_Check(o); }
static int is_type(PyObject *o) { return PyType_Check(o); }
static int is_bytes(PyObject *o) { return PyBytes_Check(o); }
static int is_any(PyObject *o) { return o != NULL; }

static const struct {
    const char *name;
    size_t offset;
    int (*check)(PyObject *);
    const char *what;
} FIELDS[] = {
    {"names", offsetof(FastView, names), kz_nametable_check, "a kzgate._native.NameTable"},
    {"refs", offsetof(FastView, refs), is_list, "a list"},
    {"entries", offsetof(FastView, entries), is_dict, "a dict"},
    {"entry_type", offsetof(FastView, entry_type), is_type, "a class"},
    {"plans", offsetof(FastView, plans), is_dict, "a dict"},
    {"soa_tail", offsetof(FastView, soa_tail), is_bytes, "bytes"},
    {"opts", offsetof(FastView, opts), is_dict, "a dict"},
    {"verdicts", offsetof(FastView, verdicts), is_dict, "a dict"},
    {"stats", offsetof(FastView, stats), is_any, "an object"},
};
#define NFIELDS (sizeof FIELDS / sizeof FIELDS[0])
#define FIELD(v, i) (*(PyObject **)((char *)(v) + FIELDS[i].offset))

static const char *const ENTRY_SLOT_NAMES[ENTRY_SLOTS] = {
    [ENTRY_REPLY] = "reply",       [ENTRY_TTL_OFFSETS] = "ttl_offsets", [ENTRY_TTLS] = "ttls",
    [ENTRY_INSERTED] = "inserted", [ENTRY_EXPIRES] = "expires",         [ENTRY_TARGETS] = "targets",
};

/* Keyword arguments only, each once: -1 with a TypeError naming the odd one. */
static int parse(PyObject *args, PyObject *kwds, PyObject **values)
{
    if (PyTuple_GET_SIZE(args) != 0) {
        PyErr_SetString(PyExc_TypeError, "FastView() takes keyword arguments only");
        return -1;
    }
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (kwds != NULL && PyDict_Next(kwds, &pos, &key, &value)) {
        size_t i = 0;
        while (i < NFIELDS
               && !(PyUnicode_Check(key) && PyUnicode_CompareWithASCIIString(key, FIELDS[i].name) == 0))
            i++;
        if (i == NFIELDS) {
            PyErr_Format(PyExc_TypeError, "FastView() got an unexpected keyword argument %R", key);
            return -1;
        }
        values[i] = value;
    }
    for (size_t i = 0; i < NFIELDS; i++) {
        if (values[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "FastView() missing keyword argument '%s'", FIELDS[i].name);
            return -1;
        }
        if (!FIELDS[i].check(values[i])) {
            PyErr_Format(PyExc_TypeError, "FastView(%s=...): %s expected, not %.100s", FIELDS[i].name,
                         FIELDS[i].what, Py_TYPE(values[i])->tp_name);
            return -1;
        }
    }
    return 0;
}

/* The slot descriptors of every field the answers read from a cache entry, into ``slots``. */
static int entry_slots(PyObject *entry_type, PyObject **slots)
{
    for (int i = 0; i < ENTRY_SLOTS; i++) {
        slots[i] = PyObject_GetAttrString(entry_type, ENTRY_SLOT_NAMES[i]);
        if (slots[i] == NULL || !PyObject_TypeCheck(slots[i], &PyMemberDescr_Type)) {
            PyErr_Format(PyExc_TypeError,
                         "FastView(entry_type=%.100s): no slot '%s' (the C fast path reads it from "
                         "every cache entry; the class must declare it, e.g. @dataclass(slots=True))",
                         ((PyTypeObject *)entry_type)->tp_name, ENTRY_SLOT_NAMES[i]);
            return -1;
        }
    }
    return 0;
}

/* An int at each counter the C path adds to. */
static int counters(PyObject *verdicts, PyObject *stats)
{
    PyObject *keys[] = {s_blocked, s_cached, s_dropped};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        PyObject *n = PyDict_GetItemWithError(verdicts, keys[i]);
        if (n == NULL || !PyLong_Check(n)) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_TypeError,
                             "FastView(verdicts=...): no count at %R (the C fast path adds to it)", keys[i]);
            return -1;
        }
    }
    PyObject *hits = PyObject_GetAttr(stats, s_cache_hits);
    int ok = hits != NULL && PyLong_Check(hits);
    Py_XDECREF(hits);
    if (!ok) {
        PyErr_Clear();
        PyErr_SetString(PyExc_TypeError,
                        "FastView(stats=...): no int cache_hits (the C fast path adds to it)");
        return -1;
    }
    return 0;
}

/* Every plan as block_answer reads it: (rcode 0-15, answer RRs, ANCOUNT, SOA?), and one for
 * the types without a plan of their own (key None). */
static int plans_ok(PyObject *plans)
{
    Py_ssize_t pos = 0;
    PyObject *key, *plan;
    while (PyDict_Next(plans, &pos, &key, &plan)) {
        int ok = (key == Py_None || PyLong_CheckExact(key)) && PyTuple_Check(plan)
                 && PyTuple_GET_SIZE(plan) == 4 && PyLong_CheckExact(PyTuple_GET_ITEM(plan, 0))
                 && PyBytes_Check(PyTuple_GET_ITEM(plan, 1)) && PyLong_CheckExact(PyTuple_GET_ITEM(plan, 2))
                 && PyBool_Check(PyTuple_GET_ITEM(plan, 3));
        if (ok) {
            long rcode = PyLong_AsLong(PyTuple_GET_ITEM(plan, 0));
            long ancount = PyLong_AsLong(PyTuple_GET_ITEM(plan, 2));
            PyErr_Clear(); /* an int too big for a long is out of range */
            ok = rcode >= 0 && rcode <= 15 && ancount >= 0 && ancount <= 0xFFFF;
        }
        if (!ok) {
            PyErr_Format(PyExc_TypeError,
                         "FastView(plans=...): plans[%R] = %R is not (rcode 0-15, answer RRs as bytes, "
                         "ANCOUNT 0-65535, SOA as bool)",
                         key, plan);
            return -1;
        }
    }
    if (PyDict_GetItemWithError(plans, Py_None) == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "FastView(plans=...): no plan for other types (key None)");
        return -1;
    }
    return 0;
}

static PyObject *FastView_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *values[NFIELDS] = {NULL};
    if (parse(args, kwds, values) < 0)
        return NULL;
    FastView *v = (FastView *)type->tp_alloc(type, 0);
    if (v == NULL)
        return NULL;
    for (size_t i = 0; i < NFIELDS; i++)
        FIELD(v, i) = Py_NewRef(values[i]);
    if (entry_slots(v->entry_type, v->entry_slots) < 0 || counters(v->verdicts, v->stats) < 0
        || plans_ok(v->plans) < 0) {
        Py_DECREF(v);
        return NULL;
    }
    return (PyObject *)v;
}

static int FastView_traverse(FastView *v, visitproc visit, void *arg)
{
    for (size_t i = 0; i < NFIELDS; i++)
        Py_VISIT(FIELD(v, i));
    for (int i = 0; i < ENTRY_SLOTS; i++)
        Py_VISIT(v->entry_slots[i]);
    return 0;
}

/* No tp_clear: a view's members stay set for its whole life, so serve() never meets a
 * cleared one; the GC breaks a cycle through a view at the dicts and lists in it. */
static void FastView_dealloc(FastView *v)
{
    PyObject_GC_UnTrack(v);
    for (size_t i = 0; i < NFIELDS; i++)
        Py_CLEAR(FIELD(v, i));
    for (int i = 0; i < ENTRY_SLOTS; i++)
        Py_CLEAR(v->entry_slots[i]);
    Py_TYPE(v)->tp_free((PyObject *)v);
}

static PyObject *FastView_get(FastView *v, void *field)
{
    return Py_NewRef(FIELD(v, (size_t)(uintptr_t)field));
}

#define GETTER(i) {FIELDS[i].name, (getter)FastView_get, NULL, NULL, (void *)(uintptr_t)(i)}
static PyGetSetDef FastView_getset[NFIELDS + 1];

PyDoc_STRVAR(FastView_doc,
"FastView(*, names, refs, entries, entry_type, plans, soa_tail, opts, verdicts, stats)\n\n"
"The engine's live structures, read in place by serve() and answer(); each is\n"
"checked here, and an error names the field that does not fit.");

PyTypeObject kz_FastViewType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kzgate._native.FastView",
    .tp_basicsize = sizeof(FastView),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = FastView_doc,
    .tp_new = FastView_new,
    .tp_dealloc = (destructor)FastView_dealloc,
    .tp_traverse = (traverseproc)FastView_traverse,
    .tp_getset = FastView_getset,
};

FastView *kz_fast_view_arg(PyObject *obj, const char *func)
{
    if (!Py_IS_TYPE(obj, &kz_FastViewType)) {
        PyErr_Format(PyExc_TypeError, "%s: a kzgate._native.FastView expected (Engine.fast_view), not %.100s",
                     func, Py_TYPE(obj)->tp_name);
        return NULL;
    }
    return (FastView *)obj;
}

PyObject *kz_fast_view_entry(const FastView *v, PyObject *entry, enum EntrySlot slot)
{
    PyObject *descr = v->entry_slots[slot];
    return Py_TYPE(descr)->tp_descr_get(descr, entry, v->entry_type);
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

int kz_fast_view_count(FastView *v, const Tally *t)
{
    if (add_count(v->verdicts, s_blocked, t->blocked, 0) < 0
        || add_count(v->verdicts, s_cached, t->cached, 0) < 0
        || add_count(v->verdicts, s_dropped, t->dropped, 0) < 0)
        return -1;
    return add_count(v->stats, s_cache_hits, t->cached, 1);
}

int kz_fast_view_add(PyObject *module)
{
    struct { PyObject **slot; const char *text; } names[] = {
        {&s_blocked, "blocked"}, {&s_cached, "cached"}, {&s_dropped, "dropped"},
        {&s_cache_hits, "cache_hits"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (*names[i].slot == NULL && (*names[i].slot = PyUnicode_InternFromString(names[i].text)) == NULL)
            return -1;
    }
    for (size_t i = 0; i < NFIELDS; i++)
        FastView_getset[i] = (PyGetSetDef)GETTER(i);
    if (PyType_Ready(&kz_FastViewType) < 0)
        return -1;
    return PyModule_AddType(module, &kz_FastViewType);
}
