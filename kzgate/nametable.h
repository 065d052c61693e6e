/*
 * The NameTable type (nametable.c) as the other C files of kzgate._native use it:
 * a type to check an object against, and a match that allocates nothing. Only
 * nametable.c touches the table's memory (nametable_core.h).
 */
#ifndef KZGATE_NAMETABLE_H
#define KZGATE_NAMETABLE_H

#include <stddef.h>

#include "native.h"

KZ_INTERNAL extern PyTypeObject kz_NameTableType;

static inline int kz_nametable_check(PyObject *obj) { return PyObject_TypeCheck(obj, &kz_NameTableType); }

/* The value of ``name`` (a lower-case wire-form name, any octets: reads only within
 * ``n``) or of its nearest listed parent, and in ``at`` the offset where that suffix
 * starts; -1 when none is listed. ``table`` must pass kz_nametable_check. */
KZ_INTERNAL long kz_nametable_match(PyObject *table, const unsigned char *name, size_t n, size_t *at);

/* Readies the type and adds it to ``module``; -1 with an exception set. */
KZ_INTERNAL int kz_nametable_add(PyObject *module);

#endif
