/* The UDP reference: a minimal C epoll echo server on 127.0.0.1, port 0.
 * Each wake-up drains the socket (recvfrom/sendto until EAGAIN).
 * Prints "listening on udp://127.0.0.1:PORT" on stderr, like socketeer. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

int main(void) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (bind(s, (struct sockaddr *)&a, sizeof a)) { perror("bind"); return 1; }
    getsockname(s, (struct sockaddr *)&a, &len);
    fprintf(stderr, "listening on udp://127.0.0.1:%d\n", ntohs(a.sin_port));
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = s}, evs[8];
    epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
    static char buf[65536];
    for (;;) {
        if (epoll_wait(ep, evs, 8, -1) < 0 && errno != EINTR) { perror("epoll_wait"); return 1; }
        for (;;) {
            struct sockaddr_storage from;
            socklen_t flen = sizeof from;
            ssize_t r = recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&from, &flen);
            if (r < 0) break;
            sendto(s, buf, r, 0, (struct sockaddr *)&from, flen);
        }
    }
}
