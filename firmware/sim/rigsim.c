/*
 * rigsim: run the real rigctl.elf in simavr as an ATmega328P at 16 MHz, with
 * UART0 on a pseudo-terminal and the servo / light pins measured.
 *
 *   rigsim [--realtime] [--wait-host] [--eeprom FILE] [--pins FILE] [--pulses FILE] build/rigctl.elf
 *
 * --wait-host holds the MCU in reset until the host sends its first byte, so a
 * host that opens the port first sees the boot events (pyserial flushes input
 * on open, so a banner sent earlier is lost).
 *
 * First stdout line: "pty /dev/pts/N". Signals: SIGTERM/SIGINT stop (EEPROM
 * saved), SIGUSR1 power-cycles the MCU (EEPROM kept). Dies with its parent.
 * The pins file formats are documented in firmware/sim/README.md.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include <sim_avr.h>
#include <sim_elf.h>
#include <sim_irq.h>
#include <sim_io.h>
#include <avr_eeprom.h>
#include <sim_regbit.h>

#include "bridge.h"
#include "pins.h"

#define FREQ 16000000UL
#define POLL_CYCLES 4000   /* 250 us: well under one 64-byte UART FIFO at 115200 */
#define SNAPSHOT_CYCLES (FREQ / 50) /* pins file every 20 ms of simulated time */
#define EEPROM_SIZE 1024

static volatile sig_atomic_t stop_requested, reset_requested;

static void on_signal(int sig)
{
    if (sig == SIGUSR1)
        reset_requested = 1;
    else
        stop_requested = 1;
}

/* simavr's default logger prints warnings to stdout, which would corrupt our
 * one-line handshake: send everything to stderr, and only what matters. */
static void logger(avr_t *avr, const int level, const char *fmt, va_list ap)
{
    (void)avr;
    if (level <= LOG_WARNING)
        vfprintf(stderr, fmt, ap);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: rigsim [--realtime] [--wait-host] [--eeprom FILE] [--pins FILE] [--pulses FILE] ELF\n");
    exit(2);
}

static void eeprom_load(avr_t *avr, const char *path)
{
    uint8_t buf[EEPROM_SIZE];
    memset(buf, 0xFF, sizeof buf); /* an erased chip */
    if (path) {
        FILE *f = fopen(path, "rb");
        if (f) {
            size_t n = fread(buf, 1, sizeof buf, f);
            (void)n; /* a short file keeps 0xFF beyond its end */
            fclose(f);
        }
    }
    avr_eeprom_desc_t d = {.ee = buf, .offset = 0, .size = sizeof buf};
    avr_ioctl(avr, AVR_IOCTL_EEPROM_SET, &d);
}

static void eeprom_save(avr_t *avr, const char *path)
{
    if (!path)
        return;
    uint8_t buf[EEPROM_SIZE];
    avr_eeprom_desc_t d = {.ee = buf, .offset = 0, .size = sizeof buf};
    /* simavr 1.6's avr_ioctl() returns -1 here even though the copy is made:
     * don't trust the return value, the buffer is what counts. */
    memset(buf, 0xFF, sizeof buf);
    avr_ioctl(avr, AVR_IOCTL_EEPROM_GET, &d);
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f)
        return;
    fwrite(buf, 1, sizeof buf, f);
    fclose(f);
    rename(tmp, path);
}

/* A power-on: the firmware reads MCUSR to report its boot cause. */
static void power_on_flag(avr_t *avr)
{
    avr_regbit_setto(avr, avr->reset_flags.porf, 1);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    const char *elf = NULL, *eeprom_path = NULL, *pins_path = NULL, *pulses_path = NULL;
    int realtime = 0, wait_host = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--realtime"))
            realtime = 1;
        else if (!strcmp(argv[i], "--wait-host"))
            wait_host = 1;
        else if (!strcmp(argv[i], "--eeprom") && i + 1 < argc)
            eeprom_path = argv[++i];
        else if (!strcmp(argv[i], "--pins") && i + 1 < argc)
            pins_path = argv[++i];
        else if (!strcmp(argv[i], "--pulses") && i + 1 < argc)
            pulses_path = argv[++i];
        else if (argv[i][0] == '-')
            usage();
        else
            elf = argv[i];
    }
    if (!elf)
        usage();

    /* Tests must never leak a simulator: go when whoever started us goes. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() == 1)
        return 1;
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    avr_global_logger_set(logger);

    elf_firmware_t fw;
    memset(&fw, 0, sizeof fw);
    if (elf_read_firmware(elf, &fw) != 0) {
        fprintf(stderr, "rigsim: cannot read %s\n", elf);
        return 1;
    }
    /* An Arduino ELF carries no .mmcu section: say what board this is. */
    strcpy(fw.mmcu, "atmega328p");
    fw.frequency = FREQ;
    avr_t *avr = avr_make_mcu_by_name(fw.mmcu);
    if (!avr) {
        fprintf(stderr, "rigsim: simavr has no atmega328p\n");
        return 1;
    }
    avr_init(avr);
    avr_load_firmware(avr, &fw);
    eeprom_load(avr, eeprom_path);
    power_on_flag(avr);

    bridge_t bridge;
    if (bridge_init(&bridge, avr) != 0) {
        perror("rigsim: openpty");
        return 1;
    }
    pins_t pins;
    if (pins_init(&pins, avr, pins_path, pulses_path) != 0) {
        perror("rigsim: pins file");
        return 1;
    }

    printf("pty %s\n", bridge.slave_name);
    fflush(stdout);

    if (wait_host) {
        /* The first host byte is dropped (the UART is not enabled yet), like on a board
         * that is still in reset: hosts send an empty line first anyway. */
        struct pollfd pfd = {.fd = bridge.master, .events = POLLIN};
        while (!stop_requested && poll(&pfd, 1, 100) <= 0) {
        }
        char junk[256];
        while (read(bridge.master, junk, sizeof junk) > 0) {
        }
    }

    avr_cycle_count_t next_poll = avr->cycle + POLL_CYCLES;
    avr_cycle_count_t next_snapshot = avr->cycle + SNAPSHOT_CYCLES;
    /* Real-time pacing: simulated seconds since t0_cycle must not run ahead of wall time. */
    avr_cycle_count_t t0_cycle = avr->cycle;
    double t0_wall = now_s();
    int rc = 0;

    while (!stop_requested) {
        int state = avr_run(avr);
        if (state == cpu_Done || state == cpu_Crashed) {
            fprintf(stderr, "rigsim: AVR stopped (state %d)\n", state);
            rc = 1;
            break;
        }
        if (avr->cycle < next_poll)
            continue;
        next_poll = avr->cycle + POLL_CYCLES;
        bridge_poll(&bridge);
        if (avr->cycle >= next_snapshot) {
            next_snapshot = avr->cycle + SNAPSHOT_CYCLES;
            pins_snapshot(&pins);
        }
        if (reset_requested) {
            reset_requested = 0;
            pins_suspend(&pins, 1);
            avr_reset(avr);
            power_on_flag(avr);
            pins_suspend(&pins, 0);
        }
        if (realtime) {
            double ahead = (double)(avr->cycle - t0_cycle) / FREQ - (now_s() - t0_wall);
            if (ahead > 0.002) {
                struct timespec ts = {0, (long)(ahead * 1e9)};
                nanosleep(&ts, NULL);
            }
        }
    }
    pins_snapshot(&pins);
    pins_close(&pins);
    eeprom_save(avr, eeprom_path);
    bridge_close(&bridge);
    return rc;
}
