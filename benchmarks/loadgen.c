/* Load generator for socketeer's benchmarks: a C client, so the client is
 * never the bottleneck when Python servers are compared.
 *
 *   loadgen rr      HOST PORT CONNS SIZE SECONDS   round trips of SIZE bytes
 *   loadgen connect HOST PORT CONCURRENCY SECONDS  connect, 1-byte echo, close
 *   loadgen idle    HOST PORT COUNT                open COUNT connections, print
 *                                                  "ready", hold them until stdin ends
 *   loadgen send    HOST PORT SECONDS [CONNS]      bulk: write 256 KiB blocks on CONNS
 *                                                  connections at once (default 1), report
 *                                                  "BYTES/S TOTAL_BYTES" (TOTAL includes warm-up)
 *   loadgen hold    HOST PORT COUNT TIMEOUT        open COUNT connections at once (non-blocking),
 *                                                  each echoes one byte; print "ready SECONDS"
 *                                                  (set-up time of all), hold until stdin ends
 *   loadgen udp     HOST PORT SENDERS SIZE SECONDS closed-loop UDP: SENDERS sockets, each
 *                                                  sends one SIZE-byte datagram and waits for
 *                                                  its reply; first one datagram per sender
 *                                                  answered (warm-up, e.g. socat's fork), then
 *                                                  0.5 s unmeasured; prints "RT/S P50_US P99_US
 *                                                  LOST" (LOST: resent after 200 ms silence)
 *
 * Prints one line of results. Loopback only: HOST must be a numeric address.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static struct sockaddr_in target;

static void die(const char *what) { perror(what); exit(1); }

static int open_conn(int nonblock) {
    int fd = socket(AF_INET, SOCK_STREAM | (nonblock ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&target, sizeof target) < 0 && errno != EINPROGRESS)
        die("connect");
    return fd;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

struct conn { int fd; size_t got; double sent_at; };

static int rr(int conns, int size, double seconds) {
    int ep = epoll_create1(0);
    struct conn *cs = calloc(conns, sizeof *cs);
    char *buf = malloc(size), *msg = malloc(size);
    memset(msg, 'x', size);
    size_t cap = 1 << 22, nlat = 0;
    double *lat = malloc(cap * sizeof *lat);
    for (int i = 0; i < conns; i++) {
        cs[i].fd = open_conn(0);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &cs[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
    }
    double start = now(), warm = start + 0.5, end = warm + seconds;
    long done = 0;
    for (int i = 0; i < conns; i++) {
        cs[i].sent_at = now();
        if (write(cs[i].fd, msg, size) != size) die("write");
    }
    struct epoll_event evs[256];
    while (1) {
        int n = epoll_wait(ep, evs, 256, 1000);
        double t = now();
        if (t >= end) break;
        for (int k = 0; k < n; k++) {
            struct conn *c = evs[k].data.ptr;
            ssize_t r = read(c->fd, buf, size - c->got);
            if (r <= 0) { fprintf(stderr, "server closed a connection\n"); return 1; }
            c->got += r;
            if (c->got < (size_t)size) continue;
            c->got = 0;
            if (t >= warm) {
                done++;
                if (nlat < cap) lat[nlat++] = t - c->sent_at;
            }
            c->sent_at = t;
            if (write(c->fd, msg, size) != size) die("write");
        }
    }
    qsort(lat, nlat, sizeof *lat, cmp_double);
    double p50 = nlat ? lat[nlat / 2] : 0, p99 = nlat ? lat[(size_t)(nlat * 0.99)] : 0;
    printf("%.1f %.1f %.1f\n", done / seconds, p50 * 1e6, p99 * 1e6);
    return 0;
}

static int connects(int concurrency, double seconds) {
    int ep = epoll_create1(0);
    double start = now(), warm = start + 0.3, end = warm + seconds;
    long done = 0;
    char byte = 'x', back;
    for (int i = 0; i < concurrency; i++) {
        int fd = open_conn(1);
        struct epoll_event ev = {.events = EPOLLOUT, .data.fd = fd};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    struct epoll_event evs[256];
    while (now() < end) {
        int n = epoll_wait(ep, evs, 256, 1000);
        for (int k = 0; k < n; k++) {
            int fd = evs[k].data.fd;
            if (evs[k].events & EPOLLOUT) {   /* connected: send a byte, wait for it */
                int err = 0; socklen_t len = sizeof err;
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err) { errno = err; die("connect"); }
                if (write(fd, &byte, 1) != 1) die("write");
                struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
                epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
                continue;
            }
            if (read(fd, &back, 1) != 1) { fprintf(stderr, "no echo\n"); return 1; }
            close(fd);
            if (now() >= warm) done++;
            int nfd = open_conn(1);
            struct epoll_event ev = {.events = EPOLLOUT, .data.fd = nfd};
            epoll_ctl(ep, EPOLL_CTL_ADD, nfd, &ev);
        }
    }
    printf("%.1f\n", done / seconds);
    return 0;
}

static int idle(int count) {
    int *fds = malloc(count * sizeof *fds);
    for (int i = 0; i < count; i++) {
        fds[i] = open_conn(0);
        char byte = 'x', back;  /* a round trip: the server has accepted and set it up */
        if (write(fds[i], &byte, 1) != 1 || read(fds[i], &back, 1) != 1) die("idle echo");
    }
    printf("ready\n");
    fflush(stdout);
    char line[16];
    while (fgets(line, sizeof line, stdin)) {}
    for (int i = 0; i < count; i++) close(fds[i]);
    return 0;
}

static int send_bulk(double seconds, int conns) {
    size_t size = 256 * 1024;
    char *block = malloc(size);
    memset(block, 'b', size);
    double start = now(), warm = start + 0.5, end = warm + seconds;
    long long sent = 0, total = 0;
    if (conns <= 1) {
        int fd = open_conn(0);
        while (1) {
            ssize_t n = write(fd, block, size);
            if (n < 0) die("write");
            double t = now();
            total += n;
            if (t >= warm) sent += n;
            if (t >= end) break;
        }
        close(fd);
    } else {  /* CONNS non-blocking connections, written to as each has room */
        int ep = epoll_create1(0);
        int *fds = malloc(conns * sizeof *fds);
        for (int i = 0; i < conns; i++) {
            fds[i] = open_conn(1);
            struct epoll_event ev = {.events = EPOLLOUT, .data.fd = fds[i]};
            epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
        }
        struct epoll_event evs[256];
        while (now() < end) {
            int n = epoll_wait(ep, evs, 256, 100);
            double t = now();
            for (int k = 0; k < n; k++) {
                ssize_t w = write(evs[k].data.fd, block, size);
                if (w < 0 && errno != EAGAIN) die("write");
                if (w <= 0) continue;
                total += w;
                if (t >= warm) sent += w;
            }
        }
        for (int i = 0; i < conns; i++) close(fds[i]);
    }
    printf("%.1f %lld\n", sent / seconds, total);
    return 0;
}

/* Closed-loop UDP round trips.  Each datagram carries its sender's sequence
 * number in its first 8 bytes, so a late reply to a datagram that was resent
 * (after 200 ms without an answer) is recognised and ignored. */
struct usender { int fd, waiting; unsigned long long seq; double sent_at; };

static void usend(struct usender *u, char *msg, int size, double t) {
    memcpy(msg, &u->seq, sizeof u->seq);
    u->sent_at = t;
    u->waiting = 1;
    if (send(u->fd, msg, size, 0) != size && errno != EAGAIN && errno != ECONNREFUSED) die("send");
}

static int udp(int senders, int size, double seconds) {
    if (size < 8) size = 8;
    int ep = epoll_create1(0);
    struct usender *us = calloc(senders, sizeof *us);
    char *buf = malloc(65536), *msg = malloc(size);
    memset(msg, 'u', size);
    size_t cap = 1 << 22, nlat = 0;
    double *lat = malloc(cap * sizeof *lat);
    for (int i = 0; i < senders; i++) {
        us[i].fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        if (us[i].fd < 0) die("socket");
        if (connect(us[i].fd, (struct sockaddr *)&target, sizeof target) < 0) die("connect");
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &us[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, us[i].fd, &ev);
    }
    /* Warm-up: every sender has one datagram answered before the loop starts. */
    double begin = now(), warm = 0, end = 0, scanned = begin;
    int answered = 0;
    long done = 0, lost = 0;
    for (int i = 0; i < senders; i++) usend(&us[i], msg, size, begin);
    struct epoll_event evs[256];
    while (1) {
        int n = epoll_wait(ep, evs, 256, 50);
        double t = now();
        if (end && t >= end) break;
        if (!end && t - begin > 10) {
            fprintf(stderr, "only %d of %d senders answered\n", answered, senders);
            return 1;
        }
        for (int k = 0; k < n; k++) {
            struct usender *u = evs[k].data.ptr;
            for (;;) {
                ssize_t r = recv(u->fd, buf, 65536, 0);
                if (r < 0 && errno == ECONNREFUSED) continue;  /* an ICMP from before the server */
                if (r < 0) break;
                unsigned long long seq;
                if (r < (ssize_t)sizeof seq || !u->waiting) continue;
                memcpy(&seq, buf, sizeof seq);
                if (seq != u->seq) continue;  /* a late reply to a resent datagram */
                u->waiting = 0;
                u->seq++;
                if (!end) { answered++; continue; }
                if (t >= warm) {
                    done++;
                    if (nlat < cap) lat[nlat++] = t - u->sent_at;
                }
                usend(u, msg, size, t);
            }
        }
        if (!end && answered == senders) {  /* the closed loop starts */
            warm = t + 0.5;
            end = warm + seconds;
            for (int i = 0; i < senders; i++) usend(&us[i], msg, size, t);
            continue;
        }
        if (t - scanned >= 0.05) {  /* resend what went unanswered for 200 ms */
            scanned = t;
            for (int i = 0; i < senders; i++) {
                if (us[i].waiting && t - us[i].sent_at > 0.2) {
                    if (end && t >= warm) lost++;
                    usend(&us[i], msg, size, t);
                }
            }
        }
    }
    qsort(lat, nlat, sizeof *lat, cmp_double);
    double p50 = nlat ? lat[nlat / 2] : 0, p99 = nlat ? lat[(size_t)(nlat * 0.99)] : 0;
    printf("%.1f %.1f %.1f %ld\n", done / seconds, p50 * 1e6, p99 * 1e6, lost);
    return 0;
}

static void raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* All COUNT connections at once: connect without blocking, send one byte as
 * each is connected, done when every byte has come back. */
static int hold(int count, double timeout) {
    int ep = epoll_create1(0);
    int *fds = malloc(count * sizeof *fds);
    double start = now();
    for (int i = 0; i < count; i++) {
        fds[i] = open_conn(1);
        struct epoll_event ev = {.events = EPOLLOUT, .data.fd = fds[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
    }
    int echoed = 0;
    char byte = 'x', back;
    struct epoll_event evs[256];
    while (echoed < count) {
        if (now() - start > timeout) {
            fprintf(stderr, "only %d of %d connections echoed in %.0f s\n", echoed, count, timeout);
            return 1;
        }
        int n = epoll_wait(ep, evs, 256, 100);
        for (int k = 0; k < n; k++) {
            int fd = evs[k].data.fd;
            if (evs[k].events & EPOLLOUT) {
                int err = 0; socklen_t len = sizeof err;
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err) { errno = err; die("connect"); }
                if (write(fd, &byte, 1) != 1) die("write");
                struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
                epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
                continue;
            }
            ssize_t r = read(fd, &back, 1);
            if (r < 0 && errno == EAGAIN) continue;
            if (r != 1) { fprintf(stderr, "a connection closed before its echo\n"); return 1; }
            epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
            echoed++;
        }
    }
    printf("ready %.4f\n", now() - start);
    fflush(stdout);
    char line[16];
    while (fgets(line, sizeof line, stdin)) {}
    for (int i = 0; i < count; i++) close(fds[i]);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: loadgen rr|connect|idle HOST PORT ...\n");
        return 2;
    }
    target.sin_family = AF_INET;
    target.sin_port = htons(atoi(argv[3]));
    if (inet_pton(AF_INET, argv[2], &target.sin_addr) != 1) { fprintf(stderr, "bad host\n"); return 2; }
    if (!strcmp(argv[1], "rr") && argc == 7) return rr(atoi(argv[4]), atoi(argv[5]), atof(argv[6]));
    if (!strcmp(argv[1], "connect") && argc == 6) return connects(atoi(argv[4]), atof(argv[5]));
    if (!strcmp(argv[1], "idle") && argc == 5) return idle(atoi(argv[4]));
    raise_nofile();
    if (!strcmp(argv[1], "send") && (argc == 5 || argc == 6))
        return send_bulk(atof(argv[4]), argc == 6 ? atoi(argv[5]) : 1);
    if (!strcmp(argv[1], "udp") && argc == 7) return udp(atoi(argv[4]), atoi(argv[5]), atof(argv[6]));
    if (!strcmp(argv[1], "hold") && argc == 6) return hold(atoi(argv[4]), atof(argv[5]));
    fprintf(stderr, "bad arguments\n");
    return 2;
}
