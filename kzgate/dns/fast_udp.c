/*
 * The UDP loop of the fast path: serve() reads the datagrams waiting on a
 * socket in batches (recvmmsg), answers what fast_answer.c can answer, sends
 * those answers in one call (sendmmsg) and hands the rest back to the engine
 * with their senders.
 *
 * Why C: on a 20k q/s load the per-packet cost of the interpreter (cold after
 * every wake-up) and of one recvfrom+sendto pair per query were most of the
 * CPU; recvmmsg/sendmmsg answer a burst with two system calls.
 */
#include "fast.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "query_parse.h"

#define BATCH 32  /* datagrams per recvmmsg/sendmmsg */
#define ROUNDS 8  /* batches per call: then back to the event loop */
/* The largest datagram UDP carries (its length field is 16 bits; 65,507 octets of
 * payload over IPv4, 65,527 over IPv6), so no query is ever cut: every size is
 * answered as the pure-Python listener answers it. Only the pages a datagram
 * touches are ever resident. */
#define IN_SIZE 65535
#define OUT_SIZE EDNS_UDP_SIZE /* no answer from here is longer (max_size caps it) */

typedef struct {
    struct mmsghdr in[BATCH];
    struct iovec in_iov[BATCH];
    struct sockaddr_storage addr[BATCH];
    unsigned char inbuf[BATCH][IN_SIZE];
    struct mmsghdr out[BATCH];
    struct iovec out_iov[BATCH];
    unsigned char outbuf[BATCH][OUT_SIZE];
} Batch;

static Batch batch;
static int busy; /* serve() is not reentrant: its buffers are static */

static PyObject *peer(const struct sockaddr_storage *ss)
{
    char host[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        return Py_BuildValue("(si)", host, (int)ntohs(a->sin_port));
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        return Py_BuildValue("(siIk)", host, (int)ntohs(a->sin6_port),
                             (unsigned)ntohl(a->sin6_flowinfo), (unsigned long)a->sin6_scope_id);
    }
    Py_RETURN_NONE;
}

static void send_all(int fd, struct mmsghdr *msgs, int n)
{
    int sent = 0;
    while (sent < n) {
        int r = sendmmsg(fd, msgs + sent, (unsigned)(n - sent), MSG_DONTWAIT);
        if (r > 0)
            sent += r;
        else if (r < 0 && errno == EINTR)
            continue;
        else
            sent++; /* this answer cannot go (a full buffer, a gone peer): UDP drops it */
    }
}

/* Append (datagram, sender) to *misses (created on first use); -1 on a Python error. */
static int hand_back(PyObject **misses, const unsigned char *data, size_t n,
                     const struct sockaddr_storage *from)
{
    if (*misses == NULL && (*misses = PyList_New(0)) == NULL)
        return -1;
    PyObject *addr = peer(from);
    if (addr == NULL)
        return -1;
    PyObject *item = Py_BuildValue("(y#N)", (const char *)data, (Py_ssize_t)n, addr);
    if (item == NULL)
        return -1;
    int rc = PyList_Append(*misses, item);
    Py_DECREF(item);
    return rc;
}

PyDoc_STRVAR(serve_doc,
"serve(fd, now, view) -> list[(bytes, address)] | None\n\n"
"Read the datagrams waiting on the non-blocking UDP socket ``fd``, answer the\n"
"blocked names and cache hits, count them in the view's stats, and return the\n"
"queries left for the engine with their senders (None when there are none).");

static PyObject *serve(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "serve(fd, now, view)");
        return NULL;
    }
    int fd = (int)PyLong_AsLong(args[0]);
    double now = PyFloat_AsDouble(args[1]);
    if (PyErr_Occurred())
        return NULL;
    FastView *v = kz_fast_view_arg(args[2], "serve()");
    if (v == NULL)
        return NULL;
    if (busy)
        Py_RETURN_NONE;
    busy = 1;
    PyObject *misses = NULL;
    Tally t = {0, 0, 0};
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < BATCH; i++) {
            struct msghdr *h = &batch.in[i].msg_hdr;
            batch.in_iov[i].iov_base = batch.inbuf[i];
            batch.in_iov[i].iov_len = IN_SIZE;
            memset(h, 0, sizeof *h);
            h->msg_iov = &batch.in_iov[i];
            h->msg_iovlen = 1;
            h->msg_name = &batch.addr[i];
            h->msg_namelen = sizeof batch.addr[i];
        }
        int got = recvmmsg(fd, batch.in, BATCH, MSG_DONTWAIT, NULL);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            continue; /* a queued ICMP error for an earlier answer: consumed, go on */
        }
        int nout = 0;
        for (int i = 0; i < got; i++) {
            const struct msghdr *h = &batch.in[i].msg_hdr;
            size_t n = batch.in[i].msg_len;
            if (h->msg_flags & MSG_TRUNC) { /* longer than any UDP datagram: not a query */
                t.dropped++;
                continue;
            }
            size_t out_len = 0;
            if (kz_fast_answer(v, &t, batch.inbuf[i], n, now, batch.outbuf[nout], OUT_SIZE, &out_len)) {
                struct msghdr *o = &batch.out[nout].msg_hdr;
                batch.out_iov[nout].iov_base = batch.outbuf[nout];
                batch.out_iov[nout].iov_len = out_len;
                memset(o, 0, sizeof *o);
                o->msg_iov = &batch.out_iov[nout];
                o->msg_iovlen = 1;
                o->msg_name = &batch.addr[i];
                o->msg_namelen = h->msg_namelen;
                nout++;
            } else if (hand_back(&misses, batch.inbuf[i], n, &batch.addr[i]) < 0) {
                send_all(fd, batch.out, nout); /* out of memory: what is answered still goes */
                goto error;
            }
        }
        send_all(fd, batch.out, nout);
        if (got < BATCH)
            break;
    }
    busy = 0;
    if (kz_fast_view_count(v, &t) < 0) {
        Py_XDECREF(misses);
        return NULL;
    }
    if (misses == NULL)
        Py_RETURN_NONE;
    return misses;
error:
    busy = 0;
    Py_XDECREF(misses);
    return NULL;
}

static PyMethodDef methods[] = {
    {"serve", (PyCFunction)(void (*)(void))serve, METH_FASTCALL, serve_doc},
    {NULL, NULL, 0, NULL},
};

int kz_fast_udp_add(PyObject *module) { return PyModule_AddFunctions(module, methods); }
