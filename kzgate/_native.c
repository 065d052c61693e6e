/*
 * The module kzgate._native, put together from its parts: the NameTable
 * (nametable.c), and the DNS fast path (dns/fast_view.c, dns/fast_answer.c,
 * dns/fast_udp.c) that reads the table in place. One module, so the parts
 * share the NameTable type by plain linking: no two builds to keep in step.
 * kzgate/native.py loads it; kzgate/nametable.py and kzgate/dns/fastpath.py
 * are the Python sides of its parts.
 */
#include "native.h"

#include "dns/fast.h"
#include "nametable.h"

/* setup.py passes the SHA-256 of the C sources it compiled (tests/unit/test_native_build.py
 * compares it with the files on disk): a build from anything else says so. */
#ifndef KZGATE_SOURCE_SHA256
#define KZGATE_SOURCE_SHA256 "unknown"
#endif
#ifndef KZGATE_SOURCE_FILES
#define KZGATE_SOURCE_FILES ""
#endif

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "kzgate._native",
    .m_doc = "kzgate's C code: the NameTable (kzgate/nametable.py) and the DNS fast path "
             "(kzgate/dns/fastpath.py).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__native(void)
{
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    if (kz_nametable_add(m) < 0 || kz_fast_view_add(m) < 0 || kz_fast_answer_add(m) < 0
        || kz_fast_udp_add(m) < 0 || PyModule_AddStringConstant(m, "SOURCE_SHA256", KZGATE_SOURCE_SHA256) < 0
        || PyModule_AddStringConstant(m, "SOURCE_FILES", KZGATE_SOURCE_FILES) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
