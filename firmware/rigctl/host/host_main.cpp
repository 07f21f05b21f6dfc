/*
 * The portable protocol core on a PC: proves it compiles and behaves without
 * the AVR. Serves the protocol on a pseudo-terminal, like rigsim, so the same
 * conformance runner can talk to it:
 *
 *   build/rigctl-host            -> prints "pty /dev/pts/N", then serves until SIGTERM
 *
 * Servo and light outputs go nowhere; EEPROM is a RAM array (blank at start).
 */
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "app.h"
#include "hw.h"
#include "proto.h"

static int master_fd = -1;
static uint8_t eeprom[1024];
static volatile sig_atomic_t stop;
static uint8_t rx[128]; /* like the UART's receive buffer: filled from the pty, read by proto_poll */
static size_t rx_head, rx_len;
static bool reset_requested;

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint64_t boot_us;

extern "C" {
uint32_t hw_millis(void) { return (uint32_t)((now_us() - boot_us) / 1000u); }
uint32_t hw_micros(void) { return (uint32_t)(now_us() - boot_us); }
void hw_write(const char *buf, size_t len)
{
    while (len) {
        ssize_t n = write(master_fd, buf, len);
        if (n <= 0) {
            usleep(1000); /* pty full: wait for the host, like a blocking UART */
            continue;
        }
        buf += n;
        len -= (size_t)n;
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
void hw_servo_ticks(uint8_t, uint16_t) {}
void hw_light(uint8_t, uint8_t) {}
void hw_eeprom_read(uint16_t addr, uint8_t *buf, uint16_t len) { memcpy(buf, eeprom + addr, len); }
void hw_eeprom_update(uint16_t addr, const uint8_t *buf, uint16_t len) { memcpy(eeprom + addr, buf, len); }
void hw_reset(void) { reset_requested = true; }
}

static void on_signal(int) { stop = 1; }

int main(void)
{
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    memset(eeprom, 0xFF, sizeof eeprom);
    int slave;
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
    printf("pty %s\n", name);
    fflush(stdout);

    boot_us = now_us();
    app_boot(BOOT_POWER);
    while (!stop) {
        if (reset_requested) { /* what the watchdog does on the AVR */
            reset_requested = false;
            boot_us = now_us();
            app_boot(BOOT_WATCHDOG);
        }
        struct pollfd p = {master_fd, POLLIN, 0};
        if (rx_len < sizeof rx && poll(&p, 1, 1) > 0) {
            uint8_t buf[64];
            size_t room = sizeof rx - rx_len;
            ssize_t n = read(master_fd, buf, room < sizeof buf ? room : sizeof buf);
            for (ssize_t i = 0; i < n; i++)
                rx[(rx_head + rx_len++) % sizeof rx] = buf[i];
        }
        proto_poll();
        app_poll();
    }
    return 0;
}
