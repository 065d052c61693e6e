/*
 * A DNS query's header and question, read as kzgate/dns/wire.py parse_query reads
 * them, for the one shape the C fast path answers; anything else is left to the
 * engine, which stays the reference.
 *
 * Pure C, no Python: kzgate/dns/fast_answer.c includes it, and so do the libFuzzer
 * harnesses in tests/fuzz/c, which run it under AddressSanitizer and UBSan
 * without an interpreter. Every read is checked against the datagram's length
 * before it is made; ``name`` is the struct's last member and exactly the
 * 255 octets a name may have, so a write past it is an out-of-bounds index
 * (UBSan) or lands outside the object (ASan).
 */
#ifndef KZGATE_QUERY_PARSE_H
#define KZGATE_QUERY_PARSE_H

#include <stddef.h>
#include <stdint.h>

#define DNS_HEADER 12
#define DNS_MAX_NAME 255   /* octets of a wire-form name, the root octet included */
#define DNS_MAX_LABEL 63
#define DNS_QR 0x8000
#define DNS_OPCODE 0x7800
#define DNS_RD 0x0100
#define DNS_RA 0x0080
#define DNS_CD 0x0010
#define DNS_T_OPT 41
#define DNS_UDP_PLAIN 512  /* the most a client without EDNS accepts */
#define EDNS_UDP_SIZE 1232 /* what we advertise and the most we send over UDP */
#define OPT_RR_FIXED 11    /* root owner, TYPE, CLASS, TTL, RDLENGTH */

typedef struct {
    unsigned flags, qtype, qclass;
    int edns, do_bit;
    size_t qend;     /* offset just past QTYPE and QCLASS */
    size_t max_size; /* the largest answer this client takes over UDP */
    size_t name_len; /* octets in ``name``, the root octet included */
    unsigned char name[DNS_MAX_NAME]; /* the QNAME, lower-case */
} Query;

static inline unsigned dns_u16(const unsigned char *p) { return (unsigned)p[0] << 8 | p[1]; }

static inline void dns_put16(unsigned char *p, unsigned v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

/* 1: a query of the shape the fast path answers, read into ``out``; 0: leave it
 * to the engine (malformed, or a shape it treats differently: QR set, an opcode
 * other than QUERY, QDCOUNT not 1, records other than one OPT right after the
 * question, an EDNS version other than 0). Reads q[0..n) only. */
static inline int query_parse(const unsigned char *q, size_t n, Query *out)
{
    if (n < DNS_HEADER || (q[2] & 0xF8)) /* no header; QR set or an opcode other than QUERY */
        return 0;
    if (dns_u16(q + 4) != 1 || dns_u16(q + 6) || dns_u16(q + 8) || dns_u16(q + 10) > 1)
        return 0;
    size_t off = DNS_HEADER, len = 0; /* off: the next length octet; len: the name so far */
    for (;;) {
        if (off >= n)
            return 0;
        unsigned label = q[off];
        if (label == 0)
            break;
        /* A pointer (a query has nothing before its question to point at) or a
         * reserved label type; then the label must be in the datagram, and the name
         * with it and a root octet within 255 octets: checked before the copy. */
        if (label > DNS_MAX_LABEL || label >= n - off || len + 1 + label + 1 > DNS_MAX_NAME)
            return 0;
        out->name[len] = (unsigned char)label;
        for (unsigned i = 1; i <= label; i++) {
            unsigned char c = q[off + i];
            out->name[len + i] = (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
        }
        len += 1 + label;
        off += 1 + label;
    }
    if (n - off < 5) /* the root octet, QTYPE, QCLASS */
        return 0;
    out->name[len] = 0;
    out->name_len = len + 1;
    out->qend = off + 5;
    out->flags = dns_u16(q + 2);
    out->qtype = dns_u16(q + off + 1);
    out->qclass = dns_u16(q + off + 3);
    out->edns = out->do_bit = 0;
    out->max_size = DNS_UDP_PLAIN;
    if (dns_u16(q + 10) == 1) {
        /* Only the usual shape: one OPT, root owner, right after the question. */
        const unsigned char *opt = q + out->qend;
        size_t room = n - out->qend;
        if (room < OPT_RR_FIXED || opt[0] != 0 || dns_u16(opt + 1) != DNS_T_OPT)
            return 0;
        if (room - OPT_RR_FIXED < dns_u16(opt + 9) || opt[6] != 0) /* RDATA inside; version 0 */
            return 0;
        size_t size = dns_u16(opt + 3);
        out->edns = 1;
        out->do_bit = (opt[7] & 0x80) != 0;
        size = size > DNS_UDP_PLAIN ? size : DNS_UDP_PLAIN; /* RFC 6891 6.2.3 */
        out->max_size = size < EDNS_UDP_SIZE ? size : EDNS_UDP_SIZE;
    }
    return 1;
}

#endif
