/* The reference relay: what splice can do on this machine, with no Python in the way.
 *
 *   splice_relay UPSTREAM_PORT [PIPE_BYTES]
 *
 * Listens on 127.0.0.1, port 0 (prints "listening on tcp://127.0.0.1:PORT" on
 * stderr, like socketeer); for each client a thread connects to
 * 127.0.0.1:UPSTREAM_PORT and moves client -> upstream with splice through one
 * pipe; a second thread moves upstream -> client the same way (iperf3 talks
 * back on its control connection). TCP_NODELAY on both sides.
 * It is the ceiling that socketeer's relay is measured against, not a tool. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static int upstream_port, pipe_bytes = 1 << 20;

struct pair { int client, up, refs; };

static void release(struct pair *p) {
    if (__atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        close(p->up);
        close(p->client);
        free(p);
    }
}

/* splice src -> pipe -> dst until EOF; then pass the EOF on. */
static void copy(int src, int dst) {
    int p[2];
    if (pipe2(p, O_CLOEXEC)) return;
    fcntl(p[1], F_SETPIPE_SZ, pipe_bytes);
    for (;;) {
        ssize_t in = splice(src, NULL, p[1], NULL, pipe_bytes, SPLICE_F_MOVE);
        if (in <= 0) break;
        while (in > 0) {
            ssize_t out = splice(p[0], NULL, dst, NULL, in, SPLICE_F_MOVE);
            if (out <= 0) goto done;
            in -= out;
        }
    }
done:
    shutdown(dst, SHUT_WR);
    close(p[0]);
    close(p[1]);
}

static void *backward(void *arg) {
    struct pair *p = arg;
    copy(p->up, p->client);
    release(p);
    return NULL;
}

static void *forward(void *arg) {
    int client = (int)(intptr_t)arg, one = 1;
    int up = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(upstream_port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(up, (struct sockaddr *)&a, sizeof a)) { close(up); close(client); return NULL; }
    setsockopt(up, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct pair *p = malloc(sizeof *p);
    *p = (struct pair){client, up, 2};
    pthread_t t;
    if (pthread_create(&t, NULL, backward, p)) p->refs = 1;
    else pthread_detach(t);
    copy(client, up);
    release(p);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: splice_relay UPSTREAM_PORT [PIPE_BYTES]\n"); return 2; }
    upstream_port = atoi(argv[1]);
    if (argc > 2) pipe_bytes = atoi(argv[2]);
    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 4096)) { perror("bind"); return 1; }
    getsockname(ls, (struct sockaddr *)&a, &len);
    fprintf(stderr, "listening on tcp://127.0.0.1:%d\n", ntohs(a.sin_port));
    for (;;) {
        int c = accept(ls, NULL, NULL);
        if (c < 0) continue;
        pthread_t t;
        if (pthread_create(&t, NULL, forward, (void *)(intptr_t)c)) { close(c); continue; }
        pthread_detach(t);
    }
}
