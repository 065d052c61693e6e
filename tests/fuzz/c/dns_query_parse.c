/*
 * libFuzzer harness: kzgate/dns/query_parse.h, the fast path's reading of a query,
 * on any datagram UDP can carry (-max_len=65535 by default).
 *
 * Beyond the sanitizers, it checks what the answer code relies on: an accepted
 * query has a header the fast path answers, a question inside the datagram whose
 * name is at most 255 octets of well-formed labels and equals the datagram's own
 * octets lower-cased, and an answer size between 512 and 1232. Its differential
 * twin against the Python engine is dns_fast_answer.
 */
#include <stdint.h>

#include "fuzz_common.h"
#include "../../../kzgate/dns/query_parse.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    default_max_len(argc, argv, "-max_len=65535");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Query q;
    memset(&q, 0xA5, sizeof q); /* nothing read before it is written */
    if (!query_parse(data, size, &q))
        return 0;
    CHECK(size >= DNS_HEADER && (data[2] & 0xF8) == 0);
    CHECK(dns_u16(data + 4) == 1 && dns_u16(data + 6) == 0 && dns_u16(data + 8) == 0);
    CHECK(dns_u16(data + 10) == (unsigned)q.edns);
    CHECK(q.flags == dns_u16(data + 2));
    CHECK(q.name_len >= 1 && q.name_len <= DNS_MAX_NAME);
    CHECK(q.qend == DNS_HEADER + q.name_len + 4 && q.qend <= size);
    size_t off = 0;
    while (q.name[off] != 0) {
        CHECK(q.name[off] <= DNS_MAX_LABEL);
        off += 1u + q.name[off];
        CHECK(off < q.name_len);
    }
    CHECK(off == q.name_len - 1);
    for (size_t i = 0; i < q.name_len; i++) {
        unsigned char c = data[DNS_HEADER + i];
        CHECK(q.name[i] == ((c >= 'A' && c <= 'Z') ? c + 32 : c));
    }
    CHECK(q.qtype == dns_u16(data + q.qend - 4) && q.qclass == dns_u16(data + q.qend - 2));
    CHECK(q.max_size >= DNS_UDP_PLAIN && q.max_size <= EDNS_UDP_SIZE);
    if (q.edns) {
        const uint8_t *opt = data + q.qend;
        CHECK(size >= q.qend + OPT_RR_FIXED && opt[0] == 0 && dns_u16(opt + 1) == DNS_T_OPT);
        CHECK(q.qend + OPT_RR_FIXED + dns_u16(opt + 9) <= size && opt[6] == 0);
        CHECK(q.do_bit == ((opt[7] & 0x80) != 0));
    } else {
        CHECK(q.max_size == DNS_UDP_PLAIN && !q.do_bit);
    }
    return 0;
}
