/* herd-bench: load, latency, propagation, rejoin, connection and memory
 * figures for a herd (and for herd-floor, the minimal line server every
 * throughput figure is compared with). See usage(); bench/run_benchmarks.sh
 * runs the whole set. */
#define _GNU_SOURCE
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "herd_bench.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: herd-bench MODE [options]\n"
            "\n"
            "modes:\n"
            "  load    closed-loop (or --rate paced) load on one server: throughput, p50/p99/p99.9/max, errors\n"
            "  prop    time until an IAMAT at --server is visible at every other server of --config\n"
            "  rejoin  start --server, fill, SIGKILL and restart it: time until it answers for every client\n"
            "  conns   open -c connections to one server, one IAMAT on each, every one answered?\n"
            "  mem     store clients in --steps and read --pid's VmRSS at each\n"
            "\n"
            "target:\n"
            "  --host H            address (default 127.0.0.1)\n"
            "  --port N            client port\n"
            "  --config FILE       topology, to find servers by name (prop, rejoin need it)\n"
            "  --server NAME       target (load, conns, mem), source (prop) or victim (rejoin)\n"
            "  --expect-name NAME  AT lines must carry this server name\n"
            "load:\n"
            "  -c, --conns N       connections (default 32)\n"
            "  -d, --depth N       commands in flight per connection (default 16; 1 with --oneshot)\n"
            "  --duration S        measured seconds (default 5)\n"
            "  --warmup S          unmeasured seconds first (default 1)\n"
            "  --count N           send exactly N commands instead (with --duration 0)\n"
            "  --rate R            open loop: R commands/s in all, latency from when each was due\n"
            "  --tick-us U         open loop: wake every U us and send what falls due within the\n"
            "                      next U us (default 0: each command at its own time)\n"
            "  --workload W        iamat | whatsat | mix (default iamat)\n"
            "  --mix F             fraction of WHATSAT in mix (default 0.1)\n"
            "  --keys K            client ids in use (default 1000); whatsat/mix store them first\n"
            "  --no-fill           the keys are already stored\n"
            "  --oneshot           one connection per command, half-closed (like the course's graders)\n"
            "  --radius R --bound B  WHATSAT arguments (default 10 5)\n"
            "  --prefix P          client id prefix (default bench<pid>-)\n"
            "  --seed N            varies positions (Places caches) (default: pid)\n"
            "prop:\n"
            "  --rate R            updates/s (0: flat out, closed loop on -c x -d)\n"
            "  --sample-every N    watch every Nth update (default: about 50 samples/s)\n"
            "  --poll-gap-us U     pause between polls of one server (default 0: back to back)\n"
            "  --verify            then check every update at every server (lost updates)\n"
            "  --varied-pos        prop, rejoin: a position per client (default: one for all, so the\n"
            "                      servers' Places caches answer the WHATSATs; --bound defaults to 1)\n"
            "rejoin:\n"
            "  --server-bin PATH   herd-server to start\n"
            "  --fill NAME         server that receives the IAMATs (default: the first other one)\n"
            "  --log-dir DIR       passed to the server (and where its log is read)\n"
            "conns / mem:\n"
            "  --pid PID[,PID...]  server processes: the target first (VmRSS, CPU per command),\n"
            "                      then the rest of the herd (load: the herd's CPU per command)\n"
            "  --steps A,B,...     mem: client counts to measure at\n"
            "  --count N           conns: rounds of one IAMAT per connection (default 2)\n"
            "general:\n"
            "  --timeout S         give up on a reply / an update after S seconds (default 10)\n"
            "  --label L           echoed in the RESULT line\n"
            "  -q, --quiet         print only RESULT lines\n"
            "\n"
            "Every measurement ends with one line \"RESULT mode=... key=value ...\" for scripts.\n");
}

int main(int argc, char **argv)
{
    static char prefix[64];
    hb_opts_t o = {
        .host = "127.0.0.1",
        .conns = 32,
        .depth = 0,
        .duration = -1,
        .warmup = -1,
        .workload = "iamat",
        .mix = 0.1,
        .keys = 1000,
        .radius = "10",
        .bound = 5,
        .timeout = 10,
        .seed = (uint64_t)getpid(),
    };
    bool keys_set = false, conns_set = false, bound_set = false, varied_pos = false;
    enum {
        O_HOST = 256, O_PORT, O_CONFIG, O_SERVER, O_FILL, O_DURATION, O_WARMUP, O_COUNT, O_RATE, O_WORKLOAD, O_MIX,
        O_KEYS, O_PREFIX, O_SEED, O_EXPECT, O_ONESHOT, O_NOFILL, O_RADIUS, O_BOUND, O_SAMPLE, O_GAP, O_VERIFY,
        O_TIMEOUT, O_BIN, O_LOGDIR, O_PID, O_STEPS, O_LABEL, O_VARIED, O_TICK,
    };
    static const struct option longs[] = {
        {"host", required_argument, 0, O_HOST},       {"port", required_argument, 0, O_PORT},
        {"config", required_argument, 0, O_CONFIG},   {"server", required_argument, 0, O_SERVER},
        {"fill", required_argument, 0, O_FILL},       {"conns", required_argument, 0, 'c'},
        {"depth", required_argument, 0, 'd'},         {"duration", required_argument, 0, O_DURATION},
        {"warmup", required_argument, 0, O_WARMUP},   {"count", required_argument, 0, O_COUNT},
        {"rate", required_argument, 0, O_RATE},       {"workload", required_argument, 0, O_WORKLOAD},
        {"mix", required_argument, 0, O_MIX},         {"keys", required_argument, 0, O_KEYS},
        {"prefix", required_argument, 0, O_PREFIX},   {"seed", required_argument, 0, O_SEED},
        {"expect-name", required_argument, 0, O_EXPECT}, {"oneshot", no_argument, 0, O_ONESHOT},
        {"no-fill", no_argument, 0, O_NOFILL},        {"radius", required_argument, 0, O_RADIUS},
        {"bound", required_argument, 0, O_BOUND},     {"sample-every", required_argument, 0, O_SAMPLE},
        {"poll-gap-us", required_argument, 0, O_GAP}, {"verify", no_argument, 0, O_VERIFY},
        {"timeout", required_argument, 0, O_TIMEOUT}, {"server-bin", required_argument, 0, O_BIN},
        {"log-dir", required_argument, 0, O_LOGDIR},  {"pid", required_argument, 0, O_PID},
        {"steps", required_argument, 0, O_STEPS},     {"label", required_argument, 0, O_LABEL},
        {"varied-pos", no_argument, 0, O_VARIED},   {"tick-us", required_argument, 0, O_TICK},   {"quiet", no_argument, 0, 'q'},               {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "c:d:qh", longs, NULL)) != -1) {
        switch (ch) {
        case O_HOST: o.host = optarg; break;
        case O_PORT: o.port = atoi(optarg); break;
        case O_CONFIG: o.config = optarg; break;
        case O_SERVER: o.server = optarg; break;
        case O_FILL: o.fill = optarg; break;
        case 'c': o.conns = atoi(optarg); conns_set = true; break;
        case 'd': o.depth = atoi(optarg); break;
        case O_DURATION: o.duration = atof(optarg); break;
        case O_WARMUP: o.warmup = atof(optarg); break;
        case O_COUNT: o.count = strtoull(optarg, NULL, 10); break;
        case O_RATE: o.rate = atof(optarg); break;
        case O_WORKLOAD: o.workload = optarg; break;
        case O_MIX: o.mix = atof(optarg); break;
        case O_KEYS: o.keys = strtoull(optarg, NULL, 10); keys_set = true; break;
        case O_PREFIX: o.prefix = optarg; break;
        case O_SEED: o.seed = strtoull(optarg, NULL, 10); break;
        case O_EXPECT: o.expect_name = optarg; break;
        case O_ONESHOT: o.oneshot = true; break;
        case O_NOFILL: o.no_fill = true; break;
        case O_RADIUS: o.radius = optarg; break;
        case O_BOUND: o.bound = atoi(optarg); bound_set = true; break;
        case O_VARIED: varied_pos = true; break;
        case O_TICK: o.tick_us = atof(optarg); break;
        case O_SAMPLE: o.sample_every = strtoull(optarg, NULL, 10); break;
        case O_GAP: o.poll_gap_us = atof(optarg); break;
        case O_VERIFY: o.verify = true; break;
        case O_TIMEOUT: o.timeout = atof(optarg); break;
        case O_BIN: o.server_bin = optarg; break;
        case O_LOGDIR: o.log_dir = optarg; break;
        case O_PID:
            for (char *q = optarg; *q && o.npids < 16;) {
                o.pids[o.npids++] = (pid_t)strtol(q, &q, 10);
                while (*q == ',')
                    q++;
            }
            break;
        case O_STEPS: o.steps = optarg; break;
        case O_LABEL: o.label = optarg; break;
        case 'q': o.quiet = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return 2;
    }
    o.mode = argv[optind];
    if (!o.prefix) {
        snprintf(prefix, sizeof prefix, "bench%d-", (int)getpid());
        o.prefix = prefix;
    }
    if (o.depth <= 0)
        o.depth = o.oneshot ? 1 : !strcmp(o.mode, "prop") ? 64 : 16;
    if (o.warmup < 0)
        o.warmup = o.count ? 0 : 1;
    if (o.duration < 0)
        o.duration = o.count ? 0 : 5;
    if (o.conns < 1 || o.bound < 1 || o.timeout <= 0 || o.mix < 0 || o.mix > 1) {
        fprintf(stderr, "herd-bench: bad option value\n");
        return 2;
    }
    /* prop and rejoin ask WHATSAT only to learn whether a server holds a
     * client: one position for all (so the Places worker answers from its
     * cache) and one place in each answer keep those answers cheap. */
    if (!strcmp(o.mode, "prop") || !strcmp(o.mode, "rejoin")) {
        o.fixed_pos = !varied_pos;
        if (!bound_set)
            o.bound = 1;
    }
    if (!strcmp(o.mode, "prop")) {
        if (!keys_set)
            o.keys = 0;
        if (!conns_set)
            o.conns = o.rate > 0 ? 4 : 32;
        if (!o.sample_every) {
            double r = o.rate > 0 ? o.rate : 100000;
            o.sample_every = r > 50 ? (uint64_t)(r / 50) : 1;
        }
    }
    if (!strcmp(o.mode, "rejoin") && !keys_set)
        o.keys = 10000;
    if (!strcmp(o.mode, "conns") && !conns_set)
        o.conns = 10000;
    if (o.oneshot)
        o.depth = 1;
    /* Writes to a closed socket come back as EPIPE (every send uses
     * MSG_NOSIGNAL); nothing else here should die of SIGPIPE either. */
    signal(SIGPIPE, SIG_IGN);
    if (!strcmp(o.mode, "load"))
        return hb_mode_load(&o);
    if (!strcmp(o.mode, "prop"))
        return hb_mode_prop(&o);
    if (!strcmp(o.mode, "rejoin"))
        return hb_mode_rejoin(&o);
    if (!strcmp(o.mode, "conns"))
        return hb_mode_conns(&o);
    if (!strcmp(o.mode, "mem"))
        return hb_mode_mem(&o);
    fprintf(stderr, "herd-bench: unknown mode %s\n", o.mode);
    usage(stderr);
    return 2;
}
