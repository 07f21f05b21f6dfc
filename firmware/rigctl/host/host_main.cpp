/*
 * The portable protocol core on a PC: the simulated rig's controller (docs/decisions/0010).
 * The same C++ that runs on the ATmega328P serves the protocol on a pseudo-terminal, like
 * rigsim, so the host driver and the conformance runner cannot tell it from a board:
 *
 *   build/rigctl-host [--state FILE]   -> prints "pty /dev/pts/N", then serves until SIGTERM
 *
 *   SIGTERM, SIGINT    stop cleanly (also when stdin is a pipe and its writer goes away)
 *   SIGUSR1            power cut: RAM state is lost, EEPROM kept; boots with cause=power
 *
 * EEPROM is a RAM array, blank (0xFF) at start and kept across power cuts of one process.
 *
 * --state FILE: the physical outputs, what a camera would see, in a small file the process maps
 * into memory and updates as the outputs change (a reader maps it too: no syscall per read).
 * Layout, native byte order (x86/ARM little endian), offsets in bytes:
 *
 *   0  char[8]   magic "RIGHOST1"
 *   8  uint32    seq: odd while an update is being written; a reader copies the file and
 *                accepts the copy only if seq was even and equal before and after (a seqlock)
 *  12  uint32    boots since the process started (1 after the first boot)
 *  16  uint8     servos (N), uint8 lights (M), 2 bytes padding
 *  20  uint16[N] servo pulse now, in 0.5 us ticks (what hw_servo_ticks drives)
 *  ..  uint8[M]  light level now, 0..255 (what hw_light drives)
 *
 * It is updated before any byte goes to the pty and at the end of every loop pass, so a host that
 * has read a reply or event finds the outputs it reports.
 *
 * The loop sleeps in ppoll until a byte arrives, a signal comes or the core has work due (the
 * next 1 ms motion step while moving, the host-silence deadline): an idle controller uses no CPU.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "app.h"
#include "hw.h"
#include "motion.h"
#include "proto.h"

struct HostState {
    char magic[8];
    uint32_t seq;
    uint32_t boots;
    uint8_t servos;
    uint8_t lights;
    uint8_t pad[2];
    uint16_t ticks[RIG_SERVOS];
    uint8_t light[RIG_LIGHTS];
};

static int master_fd = -1;
static uint8_t eeprom[1024];
static volatile sig_atomic_t stop_requested, power_cut;
static uint8_t rx[128]; /* like the UART's receive buffer: filled from the pty, read by proto_poll */
static size_t rx_head, rx_len;
static bool reset_requested;

/* Outputs as the core drives them; published to the state file once per loop pass. */
static uint16_t out_ticks[RIG_SERVOS];
static uint8_t out_light[RIG_LIGHTS];
static uint32_t boots;
static bool outputs_changed;
static HostState *state; /* the mapped state file, or NULL without --state */

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint64_t boot_us;

static void publish(void)
{
    outputs_changed = false;
    if (!state)
        return;
    uint32_t seq = state->seq;
    __atomic_store_n(&state->seq, seq + 1, __ATOMIC_RELAXED); /* odd: being written */
    __atomic_thread_fence(__ATOMIC_RELEASE);
    memcpy(state->ticks, out_ticks, sizeof out_ticks);
    memcpy(state->light, out_light, sizeof out_light);
    state->boots = boots;
    __atomic_store_n(&state->seq, seq + 2, __ATOMIC_RELEASE);
}

extern "C" {
uint32_t hw_millis(void) { return (uint32_t)((now_us() - boot_us) / 1000u); }
uint32_t hw_micros(void) { return (uint32_t)(now_us() - boot_us); }
void hw_write(const char *buf, size_t len)
{
    /* Outputs first: a host that hears "ok" or "!done" and then reads the state file finds
     * the outputs that reply or event speaks of. */
    if (outputs_changed)
        publish();
    /* Like a UART: it waits while the host reads slowly, but a line nobody reads for a second
     * (the pty's buffer full, no host on the port) is lost. */
    int budget_ms = 1000;
    while (len) {
        ssize_t n = write(master_fd, buf, len);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (budget_ms <= 0 || (n < 0 && errno != EAGAIN))
            return;
        struct pollfd p = {master_fd, POLLOUT, 0};
        poll(&p, 1, 10);
        budget_ms -= 10;
    }
}
uint16_t hw_tx_room(void) { return 1024; } /* the pty takes it; hw_write waits if not */
int16_t hw_read(void)
{
    if (!rx_len)
        return -1;
    uint8_t c = rx[rx_head];
    rx_head = (rx_head + 1) % sizeof rx;
    rx_len--;
    return c;
}
uint16_t hw_rx_waiting(void) { return (uint16_t)rx_len; }
uint8_t hw_rx_full(void) { return 0; } /* the pty holds what we have not read */
void hw_servo_ticks(uint8_t ch, uint16_t ticks)
{
    if (out_ticks[ch] != ticks) {
        out_ticks[ch] = ticks;
        outputs_changed = true;
    }
}
void hw_light(uint8_t ch, uint8_t level)
{
    if (out_light[ch] != level) {
        out_light[ch] = level;
        outputs_changed = true;
    }
}
void hw_eeprom_read(uint16_t addr, uint8_t *buf, uint16_t len) { memcpy(buf, eeprom + addr, len); }
void hw_eeprom_update(uint16_t addr, const uint8_t *buf, uint16_t len) { memcpy(eeprom + addr, buf, len); }
void hw_reset(void) { reset_requested = true; }
}

static void on_stop(int) { stop_requested = 1; }
static void on_power_cut(int) { power_cut = 1; }

static void boot(BootCause cause)
{
    rx_head = rx_len = 0; /* the receive buffer is RAM: what it held is gone */
    boot_us = now_us();
    boots++;
    app_boot(cause);
    outputs_changed = true;
    publish();
}

static HostState *map_state(const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || ftruncate(fd, sizeof(HostState)) != 0) {
        perror(path);
        return NULL;
    }
    void *m = mmap(NULL, sizeof(HostState), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        perror(path);
        return NULL;
    }
    HostState *s = (HostState *)m;
    memcpy(s->magic, "RIGHOST1", 8);
    s->servos = RIG_SERVOS;
    s->lights = RIG_LIGHTS;
    return s;
}

/* How long the loop may sleep: until the core has work due, or forever (-1). */
static int idle_ms(void)
{
    if (rx_len || power_cut || reset_requested)
        return 0;
    if (motion_moving() || g_app.done_owed || g_app.safe_owed)
        return 1; /* the core interpolates motion at 1 kHz */
    if (g_app.timeout_ms && !(g_app.flags & RIG_FLAG_SAFE)) {
        uint32_t quiet = hw_millis() - proto_last_activity();
        return quiet >= g_app.timeout_ms ? 0 : (int)(g_app.timeout_ms - quiet);
    }
    return -1;
}

static void read_pty(void)
{
    while (rx_len < sizeof rx) {
        uint8_t buf[64];
        size_t room = sizeof rx - rx_len;
        ssize_t n = read(master_fd, buf, room < sizeof buf ? room : sizeof buf);
        if (n <= 0)
            return;
        for (ssize_t i = 0; i < n; i++)
            rx[(rx_head + rx_len++) % sizeof rx] = buf[i];
    }
}

int main(int argc, char **argv)
{
    const char *state_path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--state") && i + 1 < argc) {
            state_path = argv[++i];
        } else {
            fprintf(stderr, "usage: %s [--state FILE]\n", argv[0]);
            return 2;
        }
    }
    if (state_path && !(state = map_state(state_path)))
        return 1;

    /* Signals are blocked except while the loop sleeps in ppoll, so none is missed between
     * checking the flags and going to sleep. */
    sigset_t handled, during_sleep;
    sigemptyset(&handled);
    sigaddset(&handled, SIGTERM);
    sigaddset(&handled, SIGINT);
    sigaddset(&handled, SIGUSR1);
    sigprocmask(SIG_BLOCK, &handled, &during_sleep);
    sigdelset(&during_sleep, SIGTERM);
    sigdelset(&during_sleep, SIGINT);
    sigdelset(&during_sleep, SIGUSR1);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_power_cut;
    sigaction(SIGUSR1, &sa, NULL);

    memset(eeprom, 0xFF, sizeof eeprom);
    int slave; /* kept open, so the pty survives the host closing and reopening it */
    char name[128];
    if (openpty(&master_fd, &slave, name, NULL, NULL) != 0) {
        perror("openpty");
        return 1;
    }
    struct termios t;
    const int fds[2] = {master_fd, slave};
    for (int fd : fds) {
        tcgetattr(fd, &t);
        cfmakeraw(&t);
        tcsetattr(fd, TCSANOW, &t);
    }
    fcntl(master_fd, F_SETFL, fcntl(master_fd, F_GETFL) | O_NONBLOCK);

    /* Started by a program through a pipe on stdin: its end closing means it is gone. */
    struct stat st;
    bool watch_parent = fstat(STDIN_FILENO, &st) == 0 && S_ISFIFO(st.st_mode);

    boot(BOOT_POWER);
    printf("pty %s\n", name);
    fflush(stdout);

    while (!stop_requested) {
        if (power_cut) {
            power_cut = 0;
            boot(BOOT_POWER);
        }
        if (reset_requested) { /* what the watchdog does on the AVR */
            reset_requested = false;
            boot(BOOT_WATCHDOG);
        }
        read_pty();
        proto_poll();
        app_poll();
        if (outputs_changed)
            publish();

        struct pollfd p[2] = {{master_fd, (short)(rx_len < sizeof rx ? POLLIN : 0), 0},
                              {STDIN_FILENO, POLLIN, 0}};
        int ms = idle_ms();
        struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
        if (ppoll(p, watch_parent ? 2 : 1, ms < 0 ? NULL : &ts, &during_sleep) > 0 && watch_parent &&
            p[1].revents) {
            char junk[64];
            if (read(STDIN_FILENO, junk, sizeof junk) <= 0)
                break;
        }
    }
    if (state)
        munmap(state, sizeof(HostState));
    return 0;
}
