/*
 * Simulated libnvidia-ml.so.1 for llmtop's tests and demo.
 *
 * Built with gcc against the real nvml.h (PyPI nvidia-nvml-dev) and loaded by the real pynvml.
 * A JSON scenario (path in $LLMTOP_NVML_SIM_SCENARIO, read at every nvmlInit) describes the GPUs:
 * static facts, keyframes of values over time (numbers interpolated linearly, or stepwise with
 * "interpolate": false; clock event reasons, P-state and processes are always stepwise), fields
 * that answer NOT_SUPPORTED / NO_PERMISSION, and the time a GPU falls off the bus (GPU_IS_LOST).
 *
 * Scenario time: seconds since nvmlInit times the scenario's "speed" (default 1), modulo "loop_s"
 * when given, unless a test pins it with the extra export nvmlSimSetTime(seconds)
 * (nvmlSimSetTime(-1) goes back to the clock).
 *
 * Versioned symbols can be left out of the .so at build time so the caller's fallbacks run:
 * -DSIM_OMIT_TEMPERATURE_V -DSIM_OMIT_CLOCKS_EVENT_REASONS -DSIM_OMIT_MEMORY_V2
 * -DSIM_OMIT_PROCESSES_V3 -DSIM_OMIT_PROCESSES_V2 -DSIM_OMIT_VIOLATION
 */
#define NVML_NO_UNVERSIONED_FUNC_DEFS 1
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nvml.h"

#define EXPORT __attribute__((visibility("default")))

/* ------------------------------------------------------------------ a minimal JSON reader */

typedef enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ } jtype;

typedef struct jnode {
    jtype type;
    double num;
    char *str;
    struct jnode **items; /* array items or object values */
    char **keys;          /* object keys */
    int n;
} jnode;

static const char *jp;

static void jskip(void) {
    while (*jp && isspace((unsigned char)*jp)) jp++;
}

static jnode *jnew(jtype t) {
    jnode *n = calloc(1, sizeof(jnode));
    n->type = t;
    return n;
}

static void jfree(jnode *n) {
    if (!n) return;
    for (int i = 0; i < n->n; i++) {
        jfree(n->items[i]);
        if (n->keys) free(n->keys[i]);
    }
    free(n->items);
    free(n->keys);
    free(n->str);
    free(n);
}

static char *jstring(void) {
    /* at opening quote */
    jp++;
    size_t cap = 32, len = 0;
    char *s = malloc(cap);
    while (*jp && *jp != '"') {
        char c = *jp++;
        if (c == '\\' && *jp) {
            char e = *jp++;
            switch (e) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'u': c = '?'; jp += (strlen(jp) >= 4 ? 4 : strlen(jp)); break;
            default: c = e;
            }
        }
        if (len + 2 > cap) s = realloc(s, cap *= 2);
        s[len++] = c;
    }
    if (*jp == '"') jp++;
    s[len] = 0;
    return s;
}

static jnode *jvalue(void);

static void jpush(jnode *n, char *key, jnode *v) {
    n->items = realloc(n->items, sizeof(jnode *) * (n->n + 1));
    if (n->type == J_OBJ) {
        n->keys = realloc(n->keys, sizeof(char *) * (n->n + 1));
        n->keys[n->n] = key;
    }
    n->items[n->n++] = v;
}

static jnode *jvalue(void) {
    jskip();
    if (*jp == '{') {
        jnode *n = jnew(J_OBJ);
        jp++;
        jskip();
        while (*jp && *jp != '}') {
            jskip();
            if (*jp != '"') return n;
            char *key = jstring();
            jskip();
            if (*jp == ':') jp++;
            jpush(n, key, jvalue());
            jskip();
            if (*jp == ',') jp++;
            jskip();
        }
        if (*jp == '}') jp++;
        return n;
    }
    if (*jp == '[') {
        jnode *n = jnew(J_ARR);
        jp++;
        jskip();
        while (*jp && *jp != ']') {
            jpush(n, NULL, jvalue());
            jskip();
            if (*jp == ',') jp++;
            jskip();
        }
        if (*jp == ']') jp++;
        return n;
    }
    if (*jp == '"') {
        jnode *n = jnew(J_STR);
        n->str = jstring();
        return n;
    }
    if (!strncmp(jp, "true", 4)) { jp += 4; jnode *n = jnew(J_BOOL); n->num = 1; return n; }
    if (!strncmp(jp, "false", 5)) { jp += 5; return jnew(J_BOOL); }
    if (!strncmp(jp, "null", 4)) { jp += 4; return jnew(J_NULL); }
    jnode *n = jnew(J_NUM);
    char *end;
    n->num = strtod(jp, &end);
    if (end == jp) jp++; else jp = end;
    return n;
}

static jnode *jget(const jnode *o, const char *key) {
    if (!o || o->type != J_OBJ) return NULL;
    for (int i = 0; i < o->n; i++)
        if (!strcmp(o->keys[i], key)) return o->items[i];
    return NULL;
}

static int jhas_str(const jnode *arr, const char *s) {
    if (!arr || arr->type != J_ARR) return 0;
    for (int i = 0; i < arr->n; i++)
        if (arr->items[i]->type == J_STR && !strcmp(arr->items[i]->str, s)) return 1;
    return 0;
}

/* ------------------------------------------------------------------ the scenario model */

enum {
    F_MEM_USED, F_GPU_UTIL, F_MEM_UTIL, F_TEMP, F_SM_CLOCK, F_GR_CLOCK, F_MEM_CLOCK, F_POWER, F_FAN,
    F_NUMERIC_COUNT
};
static const char *numeric_keys[F_NUMERIC_COUNT] = {
    "memory_used_bytes", "gpu_util", "mem_util", "temp_c", "sm_clock_mhz", "graphics_clock_mhz",
    "mem_clock_mhz", "power_w", "fan_percent"};

#define MAX_PROCS 16
typedef struct {
    double t;
    double v[F_NUMERIC_COUNT];
    int has[F_NUMERIC_COUNT];
    int pstate;
    int has_pstate;
    unsigned long long reasons;
    int has_reasons;
    int nproc; /* -1: not given in this keyframe */
    unsigned int pid[MAX_PROCS];
    unsigned long long pmem[MAX_PROCS];
} keyframe;

struct nvmlDevice_st {
    unsigned int index;
};

typedef struct {
    struct nvmlDevice_st dev;
    char name[96], uuid[96], bus_id[32];
    unsigned long long mem_total, mem_reserved;
    int has_max_clock[4];
    unsigned int max_clock[4]; /* graphics, sm, mem, video */
    int has_threshold[4];
    unsigned int threshold[4]; /* shutdown, slowdown, mem_max, gpu_max */
    int has_power_limit;
    unsigned int power_limit_mw;
    int persistence; /* -1 not given */
    unsigned long long supported_reasons;
    double lost_at; /* <0: never */
    jnode *not_supported, *no_permission;
    int interpolate;
    int nkf;
    keyframe *kf;
} sim_gpu;

static int g_ngpu;
static sim_gpu *g_gpus;
static jnode *g_root;
static int g_init;
static double g_speed = 1.0;
static double g_loop = 0.0; /* >0: scenario time wraps around (the demo plays forever) */
static double g_start;
static volatile double g_manual_time = -1.0;
static char g_driver[64] = "550.54.15";

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

EXPORT void nvmlSimSetTime(double seconds) { g_manual_time = seconds; }

EXPORT double nvmlSimGetTime(void) {
    if (g_manual_time >= 0) return g_manual_time;
    double t = (mono() - g_start) * g_speed;
    return g_loop > 0 ? fmod(t, g_loop) : t;
}

static double num_or(const jnode *n, double dflt) {
    if (!n) return dflt;
    if (n->type == J_NUM || n->type == J_BOOL) return n->num;
    return dflt;
}

static const struct { const char *name; unsigned long long bit; } reason_names[] = {
    {"GpuIdle", 0x1ULL}, {"ApplicationsClocksSetting", 0x2ULL}, {"SwPowerCap", 0x4ULL},
    {"HwSlowdown", 0x8ULL}, {"SyncBoost", 0x10ULL}, {"SwThermalSlowdown", 0x20ULL},
    {"HwThermalSlowdown", 0x40ULL}, {"HwPowerBrakeSlowdown", 0x80ULL},
    {"DisplayClockSetting", 0x100ULL}};

static unsigned long long parse_reasons(const jnode *n) {
    if (!n) return 0;
    if (n->type == J_NUM) return (unsigned long long)n->num;
    unsigned long long r = 0;
    if (n->type == J_ARR)
        for (int i = 0; i < n->n; i++)
            for (size_t k = 0; k < sizeof(reason_names) / sizeof(reason_names[0]); k++)
                if (n->items[i]->type == J_STR && !strcmp(n->items[i]->str, reason_names[k].name))
                    r |= reason_names[k].bit;
    return r;
}

static int parse_procs(const jnode *arr, keyframe *k) {
    if (!arr || arr->type != J_ARR) return -1;
    int n = 0;
    for (int i = 0; i < arr->n && n < MAX_PROCS; i++) {
        const jnode *p = arr->items[i];
        k->pid[n] = (unsigned int)num_or(jget(p, "pid"), 0);
        const jnode *m = jget(p, "used_memory_bytes");
        k->pmem[n] = (m && m->type == J_NUM) ? (unsigned long long)m->num : 0xFFFFFFFFFFFFFFFFULL;
        n++;
    }
    return n;
}

static void copy_str(char *dst, size_t cap, const jnode *n, const char *dflt) {
    snprintf(dst, cap, "%s", (n && n->type == J_STR) ? n->str : dflt);
}

static void free_scenario(void) {
    for (int i = 0; i < g_ngpu; i++) free(g_gpus[i].kf);
    free(g_gpus);
    g_gpus = NULL;
    g_ngpu = 0;
    jfree(g_root);
    g_root = NULL;
}

static int load_scenario(void) {
    const char *path = getenv("LLMTOP_NVML_SIM_SCENARIO");
    if (!path || !*path) return 0; /* no GPUs */
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc(size + 1);
    size_t got = fread(buf, 1, size, f);
    buf[got] = 0;
    fclose(f);
    jp = buf;
    g_root = jvalue();
    free(buf);
    g_speed = num_or(jget(g_root, "speed"), 1.0);
    g_loop = num_or(jget(g_root, "loop_s"), 0.0);
    copy_str(g_driver, sizeof g_driver, jget(g_root, "driver_version"), "550.54.15");
    const jnode *gpus = jget(g_root, "gpus");
    if (!gpus || gpus->type != J_ARR) return 0;
    g_ngpu = gpus->n;
    g_gpus = calloc(g_ngpu, sizeof(sim_gpu));
    static const char *clock_keys[4] = {"graphics", "sm", "mem", "video"};
    static const char *thr_keys[4] = {"shutdown", "slowdown", "mem_max", "gpu_max"};
    for (int i = 0; i < g_ngpu; i++) {
        const jnode *g = gpus->items[i];
        sim_gpu *s = &g_gpus[i];
        s->dev.index = i;
        char dflt[64];
        snprintf(dflt, sizeof dflt, "GPU-00000000-0000-0000-0000-%012d", i);
        copy_str(s->name, sizeof s->name, jget(g, "name"), "NVIDIA Simulated GPU");
        copy_str(s->uuid, sizeof s->uuid, jget(g, "uuid"), dflt);
        snprintf(dflt, sizeof dflt, "00000000:%02X:00.0", i + 1);
        copy_str(s->bus_id, sizeof s->bus_id, jget(g, "pci_bus_id"), dflt);
        s->mem_total = (unsigned long long)num_or(jget(g, "memory_total_bytes"), 0);
        s->mem_reserved = (unsigned long long)num_or(jget(g, "memory_reserved_bytes"), 0);
        const jnode *mc = jget(g, "max_clocks_mhz");
        for (int k = 0; k < 4; k++) {
            const jnode *v = jget(mc, clock_keys[k]);
            s->has_max_clock[k] = v && v->type == J_NUM;
            s->max_clock[k] = (unsigned int)num_or(v, 0);
        }
        const jnode *th = jget(g, "temp_thresholds_c");
        for (int k = 0; k < 4; k++) {
            const jnode *v = jget(th, thr_keys[k]);
            s->has_threshold[k] = v && v->type == J_NUM;
            s->threshold[k] = (unsigned int)num_or(v, 0);
        }
        const jnode *pl = jget(g, "power_limit_w");
        s->has_power_limit = pl && pl->type == J_NUM;
        s->power_limit_mw = (unsigned int)(num_or(pl, 0) * 1000.0);
        const jnode *pm = jget(g, "persistence_mode");
        s->persistence = (pm && pm->type == J_BOOL) ? (int)pm->num : -1;
        const jnode *sr = jget(g, "supported_clock_event_reasons");
        s->supported_reasons = sr ? parse_reasons(sr) : 0x1FFULL;
        const jnode *la = jget(g, "lost_at_s");
        s->lost_at = (la && la->type == J_NUM) ? la->num : -1.0;
        s->not_supported = jget(g, "not_supported");
        s->no_permission = jget(g, "no_permission");
        const jnode *ip = jget(g, "interpolate");
        s->interpolate = ip ? (int)num_or(ip, 1) : 1;

        const jnode *kfs = jget(g, "keyframes");
        int nkf = (kfs && kfs->type == J_ARR) ? kfs->n : 0;
        s->nkf = nkf > 0 ? nkf : 1;
        s->kf = calloc(s->nkf, sizeof(keyframe));
        const jnode *static_procs = jget(g, "processes");
        for (int k = 0; k < s->nkf; k++) {
            keyframe *kf = &s->kf[k];
            const jnode *src = nkf ? kfs->items[k] : NULL;
            kf->t = num_or(jget(src, "t"), 0);
            for (int f = 0; f < F_NUMERIC_COUNT; f++) {
                const jnode *v = jget(src, numeric_keys[f]);
                if (v && v->type == J_NUM) { kf->has[f] = 1; kf->v[f] = v->num; }
                else if (k > 0 && s->kf[k - 1].has[f]) { kf->has[f] = 1; kf->v[f] = s->kf[k - 1].v[f]; }
            }
            const jnode *ps = jget(src, "pstate");
            if (ps && ps->type == J_NUM) { kf->has_pstate = 1; kf->pstate = (int)ps->num; }
            else if (k > 0) { kf->has_pstate = s->kf[k - 1].has_pstate; kf->pstate = s->kf[k - 1].pstate; }
            const jnode *rs = jget(src, "clock_event_reasons");
            if (rs) { kf->has_reasons = 1; kf->reasons = parse_reasons(rs); }
            else if (k > 0) { kf->has_reasons = s->kf[k - 1].has_reasons; kf->reasons = s->kf[k - 1].reasons; }
            else { kf->has_reasons = 1; kf->reasons = 0; }
            kf->nproc = parse_procs(jget(src, "processes"), kf);
            if (kf->nproc < 0) {
                if (k > 0) {
                    kf->nproc = s->kf[k - 1].nproc;
                    memcpy(kf->pid, s->kf[k - 1].pid, sizeof kf->pid);
                    memcpy(kf->pmem, s->kf[k - 1].pmem, sizeof kf->pmem);
                } else {
                    kf->nproc = parse_procs(static_procs, kf);
                    if (kf->nproc < 0) kf->nproc = 0;
                }
            }
        }
        /* back-fill fields first given in a later keyframe */
        for (int f = 0; f < F_NUMERIC_COUNT; f++) {
            int first = -1;
            for (int k = 0; k < s->nkf; k++) if (s->kf[k].has[f]) { first = k; break; }
            for (int k = 0; k < first; k++) { s->kf[k].has[f] = 1; s->kf[k].v[f] = s->kf[first].v[f]; }
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ evaluation helpers */

static const keyframe *kf_at(const sim_gpu *s, double t, int *next) {
    int i = 0;
    while (i + 1 < s->nkf && s->kf[i + 1].t <= t) i++;
    *next = (i + 1 < s->nkf && t >= s->kf[i].t) ? i + 1 : -1;
    return &s->kf[i];
}

static int numeric(const sim_gpu *s, int f, double *out) {
    double t = nvmlSimGetTime();
    int nx;
    const keyframe *a = kf_at(s, t, &nx);
    if (!a->has[f]) return 0;
    if (nx < 0 || !s->interpolate) { *out = a->v[f]; return 1; }
    const keyframe *b = &s->kf[nx];
    double span = b->t - a->t;
    double w = span > 0 ? (t - a->t) / span : 0;
    *out = a->v[f] + (b->v[f] - a->v[f]) * w;
    return 1;
}

static sim_gpu *gpu_of(nvmlDevice_t d) {
    if (!d) return NULL;
    unsigned int i = d->index;
    if ((int)i >= g_ngpu || &g_gpus[i].dev != d) return NULL;
    return &g_gpus[i];
}

/* Common checks for every device call: initialised, valid handle, not lost, field available. */
static nvmlReturn_t check(nvmlDevice_t d, const char *field, sim_gpu **out) {
    if (!g_init) return NVML_ERROR_UNINITIALIZED;
    sim_gpu *s = gpu_of(d);
    if (!s) return NVML_ERROR_INVALID_ARGUMENT;
    if (s->lost_at >= 0 && nvmlSimGetTime() >= s->lost_at) return NVML_ERROR_GPU_IS_LOST;
    if (field && jhas_str(s->not_supported, field)) return NVML_ERROR_NOT_SUPPORTED;
    if (field && jhas_str(s->no_permission, field)) return NVML_ERROR_NO_PERMISSION;
    *out = s;
    return NVML_SUCCESS;
}

#define CHECK(dev, field)                          \
    sim_gpu *s = NULL;                             \
    do {                                           \
        nvmlReturn_t rc_ = check(dev, field, &s);  \
        if (rc_ != NVML_SUCCESS) return rc_;       \
    } while (0)

/* ------------------------------------------------------------------ library life */

EXPORT nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    if (g_init++ > 0) return NVML_SUCCESS;
    free_scenario();
    g_manual_time = -1.0;
    g_start = mono();
    if (load_scenario() != 0) { g_init = 0; return NVML_ERROR_DRIVER_NOT_LOADED; }
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
EXPORT nvmlReturn_t nvmlInit(void) { return nvmlInitWithFlags(0); }

EXPORT nvmlReturn_t nvmlShutdown(void) {
    if (!g_init) return NVML_ERROR_UNINITIALIZED;
    if (--g_init == 0) free_scenario();
    return NVML_SUCCESS;
}

EXPORT const char *nvmlErrorString(nvmlReturn_t r) {
    switch (r) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    default: return "Unknown Error";
    }
}

EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    if (!g_init) return NVML_ERROR_UNINITIALIZED;
    snprintf(version, length, "%s", g_driver);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length) {
    if (!g_init) return NVML_ERROR_UNINITIALIZED;
    snprintf(version, length, "12.%s", g_driver);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    if (!g_init) return NVML_ERROR_UNINITIALIZED;
    *count = (unsigned int)g_ngpu;
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetCount(unsigned int *count) { return nvmlDeviceGetCount_v2(count); }

EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    if (!g_init) return NVML_ERROR_UNINITIALIZED;
    if ((int)index >= g_ngpu) return NVML_ERROR_INVALID_ARGUMENT;
    sim_gpu *s = &g_gpus[index];
    if (s->lost_at >= 0 && nvmlSimGetTime() >= s->lost_at) return NVML_ERROR_GPU_IS_LOST;
    *device = &s->dev;
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device) {
    return nvmlDeviceGetHandleByIndex_v2(index, device);
}

EXPORT nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index) {
    CHECK(device, NULL);
    *index = s->dev.index;
    return NVML_SUCCESS;
}

/* ------------------------------------------------------------------ static facts */

EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    CHECK(device, "name");
    if (strlen(s->name) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    snprintf(name, length, "%s", s->name);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    CHECK(device, "uuid");
    if (strlen(s->uuid) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    snprintf(uuid, length, "%s", s->uuid);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci) {
    CHECK(device, "pci");
    memset(pci, 0, sizeof *pci);
    snprintf(pci->busId, sizeof pci->busId, "%s", s->bus_id);
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%.12s", s->bus_id + (strlen(s->bus_id) > 12 ? 4 : 0));
    unsigned int dom = 0, bus = 0, dev = 0;
    sscanf(s->bus_id, "%x:%x:%x", &dom, &bus, &dev);
    pci->domain = dom;
    pci->bus = bus;
    pci->device = dev;
    pci->pciDeviceId = 0x233010DE;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMaxClockInfo(nvmlDevice_t device, nvmlClockType_t type, unsigned int *clock) {
    CHECK(device, "max_clocks");
    if ((int)type < 0 || type > 3) return NVML_ERROR_INVALID_ARGUMENT;
    if (!s->has_max_clock[type]) return NVML_ERROR_NOT_SUPPORTED;
    *clock = s->max_clock[type];
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetTemperatureThreshold(nvmlDevice_t device, nvmlTemperatureThresholds_t t, unsigned int *temp) {
    CHECK(device, "thresholds");
    if ((int)t < 0 || t > 3) return NVML_ERROR_NOT_SUPPORTED;
    if (!s->has_threshold[t]) return NVML_ERROR_NOT_SUPPORTED;
    *temp = s->threshold[t];
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t device, unsigned int *limit) {
    CHECK(device, "power_limit");
    if (!s->has_power_limit) return NVML_ERROR_NOT_SUPPORTED;
    *limit = s->power_limit_mw;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetPersistenceMode(nvmlDevice_t device, nvmlEnableState_t *mode) {
    CHECK(device, "persistence");
    if (s->persistence < 0) return NVML_ERROR_NOT_SUPPORTED;
    *mode = s->persistence ? NVML_FEATURE_ENABLED : NVML_FEATURE_DISABLED;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetSupportedClocksEventReasons(nvmlDevice_t device, unsigned long long *r) {
    CHECK(device, "clock_event_reasons");
    *r = s->supported_reasons;
    return NVML_SUCCESS;
}

/* ------------------------------------------------------------------ dynamic values */

static nvmlReturn_t memory_values(sim_gpu *s, unsigned long long *used) {
    double v;
    if (!numeric(s, F_MEM_USED, &v)) return NVML_ERROR_NOT_SUPPORTED;
    if (v < 0) v = 0;
    if (v > (double)s->mem_total) v = (double)s->mem_total;
    *used = (unsigned long long)v;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
    CHECK(device, "memory");
    unsigned long long used;
    nvmlReturn_t rc = memory_values(s, &used);
    if (rc) return rc;
    /* v1 counts reserved memory as used */
    unsigned long long u1 = used + s->mem_reserved;
    if (u1 > s->mem_total) u1 = s->mem_total;
    memory->total = s->mem_total;
    memory->used = u1;
    memory->free = s->mem_total - u1;
    return NVML_SUCCESS;
}

#ifndef SIM_OMIT_MEMORY_V2
EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory) {
    CHECK(device, "memory");
    if (memory->version != nvmlMemory_v2) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    unsigned long long used;
    nvmlReturn_t rc = memory_values(s, &used);
    if (rc) return rc;
    unsigned long long reserved = s->mem_reserved;
    if (used + reserved > s->mem_total) used = s->mem_total - reserved;
    memory->total = s->mem_total;
    memory->reserved = reserved;
    memory->used = used;
    memory->free = s->mem_total - reserved - used;
    return NVML_SUCCESS;
}
#endif

EXPORT nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *u) {
    CHECK(device, "utilization");
    double g, m;
    if (!numeric(s, F_GPU_UTIL, &g) || !numeric(s, F_MEM_UTIL, &m)) return NVML_ERROR_NOT_SUPPORTED;
    u->gpu = (unsigned int)lround(g);
    u->memory = (unsigned int)lround(m);
    return NVML_SUCCESS;
}

static nvmlReturn_t temp_now(sim_gpu *s, nvmlTemperatureSensors_t sensor, double *v) {
    if (sensor != NVML_TEMPERATURE_GPU) return NVML_ERROR_INVALID_ARGUMENT;
    if (!numeric(s, F_TEMP, v)) return NVML_ERROR_NOT_SUPPORTED;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, nvmlTemperatureSensors_t sensor, unsigned int *temp) {
    CHECK(device, "temperature");
    double v;
    nvmlReturn_t rc = temp_now(s, sensor, &v);
    if (rc) return rc;
    *temp = (unsigned int)lround(v);
    return NVML_SUCCESS;
}

#ifndef SIM_OMIT_TEMPERATURE_V
EXPORT nvmlReturn_t nvmlDeviceGetTemperatureV(nvmlDevice_t device, nvmlTemperature_t *temperature) {
    CHECK(device, "temperature");
    if (temperature->version != nvmlTemperature_v1) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    double v;
    nvmlReturn_t rc = temp_now(s, temperature->sensorType, &v);
    if (rc) return rc;
    temperature->temperature = (int)lround(v);
    return NVML_SUCCESS;
}
#endif

EXPORT nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t device, nvmlClockType_t type, unsigned int *clock) {
    CHECK(device, "clocks");
    int f;
    switch (type) {
    case NVML_CLOCK_GRAPHICS: f = F_GR_CLOCK; break;
    case NVML_CLOCK_SM: f = F_SM_CLOCK; break;
    case NVML_CLOCK_MEM: f = F_MEM_CLOCK; break;
    default: return NVML_ERROR_NOT_SUPPORTED;
    }
    double v;
    if (!numeric(s, f, &v)) {
        /* graphics clock follows the SM clock when not given */
        if (f != F_GR_CLOCK || !numeric(s, F_SM_CLOCK, &v)) return NVML_ERROR_NOT_SUPPORTED;
    }
    *clock = (unsigned int)lround(v);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *power) {
    CHECK(device, "power");
    double v;
    if (!numeric(s, F_POWER, &v)) return NVML_ERROR_NOT_SUPPORTED;
    *power = (unsigned int)lround(v * 1000.0);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetFanSpeed(nvmlDevice_t device, unsigned int *speed) {
    CHECK(device, "fan");
    double v;
    if (!numeric(s, F_FAN, &v)) return NVML_ERROR_NOT_SUPPORTED;
    *speed = (unsigned int)lround(v);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetPerformanceState(nvmlDevice_t device, nvmlPstates_t *p) {
    CHECK(device, "pstate");
    int nx;
    const keyframe *k = kf_at(s, nvmlSimGetTime(), &nx);
    if (!k->has_pstate) return NVML_ERROR_NOT_SUPPORTED;
    *p = (nvmlPstates_t)k->pstate;
    return NVML_SUCCESS;
}

static nvmlReturn_t reasons_now(nvmlDevice_t device, unsigned long long *r) {
    CHECK(device, "clock_event_reasons");
    int nx;
    const keyframe *k = kf_at(s, nvmlSimGetTime(), &nx);
    *r = k->reasons & s->supported_reasons;
    return NVML_SUCCESS;
}

#ifndef SIM_OMIT_CLOCKS_EVENT_REASONS
EXPORT nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(nvmlDevice_t device, unsigned long long *r) {
    return reasons_now(device, r);
}
#endif

EXPORT nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(nvmlDevice_t device, unsigned long long *r) {
    return reasons_now(device, r);
}

#ifndef SIM_OMIT_VIOLATION
/* Cumulative seconds in [0, t] during which the stepwise reasons had any bit of mask. */
static double violation_seconds(const sim_gpu *s, double t, unsigned long long mask) {
    double total = 0;
    for (int i = 0; i < s->nkf; i++) {
        double a = i == 0 ? 0 : s->kf[i].t;
        double b = i + 1 < s->nkf ? s->kf[i + 1].t : t;
        if (a < 0) a = 0;
        if (b > t) b = t;
        if (b > a && (s->kf[i].reasons & s->supported_reasons & mask)) total += b - a;
    }
    return total;
}

EXPORT nvmlReturn_t nvmlDeviceGetViolationStatus(nvmlDevice_t device, nvmlPerfPolicyType_t policy, nvmlViolationTime_t *v) {
    CHECK(device, "violation");
    unsigned long long mask;
    if (policy == NVML_PERF_POLICY_THERMAL) mask = 0x20ULL | 0x40ULL;
    else if (policy == NVML_PERF_POLICY_POWER) mask = 0x4ULL | 0x80ULL;
    else return NVML_ERROR_NOT_SUPPORTED;
    double t = nvmlSimGetTime();
    v->referenceTime = 1700000000000000ULL + (unsigned long long)(t * 1e6);
    v->violationTime = (unsigned long long)(violation_seconds(s, t, mask) * 1e9);
    return NVML_SUCCESS;
}
#endif

/* ------------------------------------------------------------------ processes */

static nvmlReturn_t procs_now(nvmlDevice_t device, unsigned int *count, void *infos, size_t stride, int v1) {
    CHECK(device, "processes");
    int nx;
    const keyframe *k = kf_at(s, nvmlSimGetTime(), &nx);
    unsigned int n = (unsigned int)k->nproc;
    if (infos == NULL || *count < n) {
        unsigned int had = *count;
        *count = n;
        if (n == 0) return NVML_SUCCESS;
        return (infos == NULL || had < n) ? NVML_ERROR_INSUFFICIENT_SIZE : NVML_SUCCESS;
    }
    for (unsigned int i = 0; i < n; i++) {
        char *p = (char *)infos + i * stride;
        if (v1) {
            nvmlProcessInfo_v1_t *e = (nvmlProcessInfo_v1_t *)p;
            e->pid = k->pid[i];
            e->usedGpuMemory = k->pmem[i];
        } else {
            nvmlProcessInfo_v2_t *e = (nvmlProcessInfo_v2_t *)p;
            e->pid = k->pid[i];
            e->usedGpuMemory = k->pmem[i];
            e->gpuInstanceId = 0xFFFFFFFFu;
            e->computeInstanceId = 0xFFFFFFFFu;
        }
    }
    *count = n;
    return NVML_SUCCESS;
}

#ifndef SIM_OMIT_PROCESSES_V3
EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t device, unsigned int *count, nvmlProcessInfo_t *infos) {
    return procs_now(device, count, infos, sizeof(nvmlProcessInfo_t), 0);
}
#endif

#ifndef SIM_OMIT_PROCESSES_V2
EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(nvmlDevice_t device, unsigned int *count, nvmlProcessInfo_v2_t *infos) {
    return procs_now(device, count, infos, sizeof(nvmlProcessInfo_v2_t), 0);
}
#endif

EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses(nvmlDevice_t device, unsigned int *count, nvmlProcessInfo_v1_t *infos) {
    return procs_now(device, count, infos, sizeof(nvmlProcessInfo_v1_t), 1);
}
