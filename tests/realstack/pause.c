/* Minimal pod sandbox "pause" process for the offline real-stack image.
 * Sleeps forever, reaps adopted children, exits 0 on SIGINT/SIGTERM.
 * Built by tests/realstack/setup.sh with: gcc -Os -static -s -o pause pause.c */
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void terminate(int sig) {
    (void)sig;
    _exit(0);
}

static void reap(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = terminate;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = reap;
    sa.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    sigaction(SIGCHLD, &sa, NULL);
    for (;;) {
        pause();
    }
    return 0;
}
