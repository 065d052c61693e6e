/*
 * libFuzzer harness: the whole C answer path (parse, policy, block answers, cache
 * hits, counters) against the Python engine, byte for byte, on any datagram UDP can
 * carry (-max_len=65535 by default).
 *
 * fuzz-build: embeds-python
 *
 * block_answer and cached_answer read the engine's Python structures, so this
 * harness embeds CPython: build.sh compiles every C file of kzgate._native into
 * it (instrumented for coverage and the sanitizers), and the module is
 * registered as kzgate._native before kzgate is imported, so kzgate's own code
 * builds the engines, their FastViews, the NameTables and the cache on it.
 * Each input goes to fast_pair.Checker.check (next to this file): C first, the
 * engine for what C leaves, against the engine alone, in every block mode. A
 * mismatch raises, and the harness aborts with the Python traceback.
 *
 * build.sh passes KZGATE_ROOT; the interpreter is the one of $KZGATE_ROOT/.venv
 * (its site-packages: kzgate installed editable, dnslib), with PYTHONMALLOC=malloc
 * so ASan sees every Python allocation. Leak checking is off: an interpreter keeps
 * caches and free lists that look like leaks.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#include "fuzz_common.h"

PyMODINIT_FUNC PyInit__native(void); /* kzgate/_native.c */

#ifndef KZGATE_ROOT
#error "build with -DKZGATE_ROOT=\"/path/to/the/checkout\" (tests/fuzz/c/build.sh does)"
#endif

const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "detect_leaks=0"; }

static PyObject *check;

static void fail_python(const char *what)
{
    fprintf(stderr, "dns_fast_answer: %s\n", what);
    if (PyErr_Occurred())
        PyErr_Print();
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    default_max_len(argc, argv, "-max_len=65535");
    PyPreConfig pre;
    PyPreConfig_InitPythonConfig(&pre);
    pre.allocator = PYMEM_ALLOCATOR_MALLOC;
    pre.utf8_mode = 1;
    if (PyStatus_Exception(Py_PreInitialize(&pre)))
        fail_python("Py_PreInitialize failed");
    PyConfig config;
    PyConfig_InitPythonConfig(&config);
    config.parse_argv = 0;
    config.install_signal_handlers = 0; /* libFuzzer's */
    config.safe_path = 1;
    /* The venv's interpreter: its pyvenv.cfg gives the site-packages kzgate is installed in. */
    if (PyStatus_Exception(PyConfig_SetBytesString(&config, &config.program_name, KZGATE_ROOT "/.venv/bin/python"))
        || PyStatus_Exception(Py_InitializeFromConfig(&config)))
        fail_python("Py_InitializeFromConfig failed");
    PyConfig_Clear(&config);

    PyObject *module = PyInit__native(), *modules = PyImport_GetModuleDict();
    if (module == NULL || PyDict_SetItemString(modules, "kzgate._native", module) < 0)
        fail_python("registering the instrumented kzgate._native failed");
    PyObject *sys_path = PySys_GetObject("path"); /* borrowed */
    PyObject *here = PyUnicode_FromString(KZGATE_ROOT "/tests/fuzz/c");
    if (sys_path == NULL || here == NULL || PyList_Insert(sys_path, 0, here) < 0)
        fail_python("sys.path");
    Py_DECREF(here);
    PyObject *pair = PyImport_ImportModule("fast_pair");
    PyObject *fast = pair ? PyObject_GetAttrString(pair, "FAST") : NULL;
    if (fast == NULL || fast != module)
        fail_python("fast_pair did not get the instrumented module as kzgate._native");
    Py_DECREF(fast);
    PyObject *checker = PyObject_CallMethod(pair, "Checker", NULL);
    check = checker ? PyObject_GetAttrString(checker, "check") : NULL;
    if (check == NULL)
        fail_python("fast_pair.Checker() failed");
    Py_DECREF(checker);
    Py_DECREF(pair);
    Py_DECREF(module);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    PyObject *datagram = PyBytes_FromStringAndSize((const char *)data, (Py_ssize_t)size);
    if (datagram == NULL)
        fail_python("bytes");
    PyObject *result = PyObject_CallOneArg(check, datagram);
    Py_DECREF(datagram);
    if (result == NULL)
        fail_python("the C path and the engine disagree");
    Py_DECREF(result);
    return 0;
}
