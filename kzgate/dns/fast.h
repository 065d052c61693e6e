/*
 * What the C files of the DNS fast path share: the view of the engine's
 * structures (fast_view.c), the answers built from it (fast_answer.c) and the
 * UDP loop that sends them (fast_udp.c). kzgate/_native.c adds each part to the
 * module; kzgate/dns/fastpath.py is the Python side.
 *
 * A compiled twin of the common case of kzgate/dns/engine.py, which stays the
 * reference (tests compare the two byte for byte). It reads the engine's own
 * Python structures, so there is one policy and one cache whichever path
 * answers. Everything runs on the event loop's thread with the GIL held.
 */
#ifndef KZGATE_DNS_FAST_H
#define KZGATE_DNS_FAST_H

#include <stddef.h>

#include "../native.h"

/* The slots of a cache entry (kzgate/dns/cache.py Entry) the answers read. */
enum EntrySlot { ENTRY_REPLY, ENTRY_TTL_OFFSETS, ENTRY_TTLS, ENTRY_INSERTED, ENTRY_EXPIRES, ENTRY_TARGETS,
                 ENTRY_SLOTS };

/* kzgate._native.FastView: the engine's live structures by name, each checked when
 * the engine builds the view (Engine.fast_view) and never replaced after. */
typedef struct {
    PyObject_HEAD
    PyObject *names;      /* NameTable: lower-case wire name -> a number in refs */
    PyObject *refs;       /* list: number -> InstructionRef */
    PyObject *entries;    /* dict: (qname, qtype, qclass, do, edns) -> cache entry */
    PyObject *entry_type; /* the entries' class; C reads only exactly this class */
    PyObject *plans;      /* dict: qtype or None -> (rcode, answer RRs, ancount, soa?) */
    PyObject *soa_tail;   /* bytes: the SOA RR after its owner */
    PyObject *opts;       /* dict: id(ref) -> (ref, OPT+EDE, OPT+EDE with DO) */
    PyObject *verdicts;   /* dict: verdict -> count (kzgate/dns/types.py VERDICTS) */
    PyObject *stats;      /* DnsStats: its cache_hits */
    PyObject *entry_slots[ENTRY_SLOTS]; /* entry_type's slot descriptors */
} FastView;

/* What one call answered, added to the view's counters when it ends. */
typedef struct {
    long blocked, cached, dropped;
} Tally;

KZ_INTERNAL extern PyTypeObject kz_FastViewType;

/* ``obj`` as a FastView; NULL with a TypeError naming ``func`` when it is not one. */
KZ_INTERNAL FastView *kz_fast_view_arg(PyObject *obj, const char *func);

/* Slot ``slot`` of ``entry``, which must be exactly of the view's entry_type: a new
 * reference, or NULL with an exception (an unset slot). */
KZ_INTERNAL PyObject *kz_fast_view_entry(const FastView *v, PyObject *entry, enum EntrySlot slot);

/* Adds ``t`` to the view's verdict counters and stats.cache_hits; -1 on a Python error. */
KZ_INTERNAL int kz_fast_view_count(FastView *v, const Tally *t);

/* 1: answered ``q`` (``n`` octets) into ``out`` (at most ``out_cap`` octets), counted
 * in ``t``; 0: the engine's to answer. Never an error: whatever this path did not
 * expect is the engine's, for this one query, and the batch goes on. */
KZ_INTERNAL int kz_fast_answer(const FastView *v, Tally *t, const unsigned char *q, size_t n, double now,
                               unsigned char *out, size_t out_cap, size_t *out_len);

/* Each part adds its type or functions to the module; -1 with an exception set. */
KZ_INTERNAL int kz_fast_view_add(PyObject *module);
KZ_INTERNAL int kz_fast_answer_add(PyObject *module);
KZ_INTERNAL int kz_fast_udp_add(PyObject *module);

#endif
