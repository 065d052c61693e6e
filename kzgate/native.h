/*
 * What every C file of the kzgate._native extension shares (setup.py builds the
 * one module from all of them): Python's headers, and the mark of a name that
 * one file defines for the others and that stays inside the module.
 *
 * Only public CPython API: the module builds on 3.11 to 3.13 with -Wall -Wextra
 * -Werror (tests/unit/test_native_build.py).
 */
#ifndef KZGATE_NATIVE_H
#define KZGATE_NATIVE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define KZ_INTERNAL __attribute__((visibility("hidden")))

#endif
