/* Soak client: many short connections, each one request and its echo, and
 * every failure counted rather than fatal, so that a soak run can report them.
 *
 *   soak_client HOST PORT TOTAL CONCURRENCY SIZE SECONDS TIMEOUT
 *
 * Keeps CONCURRENCY connections in flight until TOTAL have been started or
 * SECONDS have passed. Each one connects, writes SIZE bytes (at most 4096),
 * reads SIZE bytes back, checks them and closes; one not done within TIMEOUT
 * seconds is a failure. Prints one line:
 *
 *   DONE FAILED SECONDS connect=N reset=N closed=N mismatch=N timeout=N
 *
 * Loopback only: HOST must be a numeric IPv4 address.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { IDLE, CONNECTING, READING };
enum { F_CONNECT, F_RESET, F_CLOSED, F_MISMATCH, F_TIMEOUT, F_KINDS };
static const char *kind_names[F_KINDS] = {"connect", "reset", "closed", "mismatch", "timeout"};

struct slot { int fd, state; size_t got; double started; unsigned char seq; };

static struct sockaddr_in target;
static long failures[F_KINDS];
static int size;
static unsigned char msg[4096], buf[4096];

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void finish(int ep, struct slot *s, int failure) {
    if (failure >= 0) failures[failure]++;
    epoll_ctl(ep, EPOLL_CTL_DEL, s->fd, NULL);
    close(s->fd);
    s->fd = -1;
    s->state = IDLE;
}

/* Start one connection in slot S; 0 when it could not even be started. */
static int start(int ep, struct slot *s, unsigned char seq) {
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (s->fd < 0) { failures[F_CONNECT]++; s->state = IDLE; return 0; }
    int one = 1;
    setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    s->state = CONNECTING;
    s->got = 0;
    s->seq = seq;
    s->started = now();
    if (connect(s->fd, (struct sockaddr *)&target, sizeof target) < 0 && errno != EINPROGRESS) {
        close(s->fd);
        s->fd = -1;
        s->state = IDLE;
        failures[F_CONNECT]++;
        return 0;
    }
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = s};
    epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev);
    return 1;
}

static void request(int ep, struct slot *s) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) { finish(ep, s, F_CONNECT); return; }
    msg[0] = s->seq;  /* a reply meant for another connection would not match */
    if (write(s->fd, msg, size) != size) { finish(ep, s, F_RESET); return; }
    s->state = READING;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = s};
    epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev);
}

/* 1 when the connection is done (well or not). */
static int reply(int ep, struct slot *s, long *done) {
    ssize_t r = read(s->fd, buf + s->got, size - s->got);
    if (r < 0 && errno == EAGAIN) return 0;
    if (r < 0) { finish(ep, s, F_RESET); return 1; }
    if (r == 0) { finish(ep, s, F_CLOSED); return 1; }
    s->got += r;
    if (s->got < (size_t)size) return 0;
    msg[0] = s->seq;
    if (memcmp(buf, msg, size) != 0) { finish(ep, s, F_MISMATCH); return 1; }
    (*done)++;
    finish(ep, s, -1);
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: soak_client HOST PORT TOTAL CONCURRENCY SIZE SECONDS TIMEOUT\n");
        return 2;
    }
    target.sin_family = AF_INET;
    target.sin_port = htons(atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &target.sin_addr) != 1) { fprintf(stderr, "bad host\n"); return 2; }
    long total = atol(argv[3]);
    int concurrency = atoi(argv[4]);
    size = atoi(argv[5]);
    double seconds = atof(argv[6]), timeout = atof(argv[7]);
    if (total < 0 || concurrency < 1 || size < 1 || size > (int)sizeof msg) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    for (int i = 0; i < size; i++) msg[i] = 'a' + i % 26;

    int ep = epoll_create1(0);
    struct slot *slots = calloc(concurrency, sizeof *slots);
    double begin = now(), end = begin + seconds, scanned = begin;
    long started = 0, done = 0, running = 0;
    for (int i = 0; i < concurrency; i++) slots[i].fd = -1;
    struct epoll_event evs[256];
    for (;;) {
        double t = now();
        for (int i = 0; i < concurrency; i++) {  /* refill the idle slots */
            if (slots[i].state != IDLE) continue;
            if (started >= total || t >= end) continue;
            started++;
            if (start(ep, &slots[i], (unsigned char)started)) running++;
        }
        if (running == 0 && (started >= total || t >= end)) break;
        int n = epoll_wait(ep, evs, 256, 100);
        for (int k = 0; k < n; k++) {
            struct slot *s = evs[k].data.ptr;
            if (s->state == CONNECTING) request(ep, s);
            else if (s->state == READING) reply(ep, s, &done);
            if (s->state == IDLE) running--;
        }
        t = now();
        if (t - scanned >= 0.1) {
            scanned = t;
            for (int i = 0; i < concurrency; i++) {
                if (slots[i].state != IDLE && t - slots[i].started > timeout) {
                    finish(ep, &slots[i], F_TIMEOUT);
                    running--;
                }
            }
        }
    }
    long failed = 0;
    for (int k = 0; k < F_KINDS; k++) failed += failures[k];
    printf("%ld %ld %.3f", done, failed, now() - begin);
    for (int k = 0; k < F_KINDS; k++) printf(" %s=%ld", kind_names[k], failures[k]);
    printf("\n");
    return 0;
}
