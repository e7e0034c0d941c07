/* The streaming resampler's inner loop in C (gateway/audio/resample.py holds the design and the
 * NumPy version, which stays the reference and the fallback when this module is not built).
 *
 * Why C: a 20 ms chunk is 160 samples, and the NumPy version spends most of its ~9 us on the ten
 * NumPy calls around one small matrix product, not on arithmetic (bench/audio.py). Here one call
 * appends the chunk to the stream's history, computes every output it can and drops the consumed
 * input, with no allocation but the returned bytes.
 *
 * Safety: every index is derived from sizes checked against the buffers' real lengths before any
 * read or write; the caller's PCM is only ever read as whole int16 samples.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* Output blocks computed together (see the loop). */
#define SPAN 64
/* Bounds on the filter's shape that process() accepts. */
#define MAX_WINDOW 4096
#define MAX_RATIO 64

/* True when the buffer holds native doubles ("d", or "@d" / "=d": native order, as NumPy gives). */
static int
is_double(const Py_buffer *b)
{
    const char *f = b->format;
    if (f == NULL || b->itemsize != (Py_ssize_t)sizeof(double)) {
        return 0;
    }
    if (f[0] == '@' || f[0] == '=') {
        f++;
    }
    return f[0] == 'd' && f[1] == '\0';
}

/* acc[j] = sum over k < window of x(k)[j] * t[k], for j < span, where x(k) is where tap k's inputs
 * start (contiguous in j). Eight sums at a time stay in registers (the compiler vectorises them); each
 * still adds its products in tap order. */
static void
dot_span(double *restrict acc, const double *const *restrict xk, const double *restrict t, Py_ssize_t window,
         Py_ssize_t span)
{
    Py_ssize_t j = 0;
    for (; j + 8 <= span; j += 8) {
        double a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
        for (Py_ssize_t k = 0; k < window; k++) {
            const double *x = xk[k] + j;
            const double tk = t[k];
            a0 += x[0] * tk;
            a1 += x[1] * tk;
            a2 += x[2] * tk;
            a3 += x[3] * tk;
            a4 += x[4] * tk;
            a5 += x[5] * tk;
            a6 += x[6] * tk;
            a7 += x[7] * tk;
        }
        acc[j] = a0;
        acc[j + 1] = a1;
        acc[j + 2] = a2;
        acc[j + 3] = a3;
        acc[j + 4] = a4;
        acc[j + 5] = a5;
        acc[j + 6] = a6;
        acc[j + 7] = a7;
    }
    for (; j < span; j++) {
        double a = 0;
        for (Py_ssize_t k = 0; k < window; k++) {
            a += xk[k][j] * t[k];
        }
        acc[j] = a;
    }
}

/* process(buf, held, pcm, taps, window, up, down) -> (bytes, held)
 *
 * buf:    writable float64 buffer: the stream's held input (its first `held` samples), room after.
 * pcm:    little-endian PCM16 to append (an even number of bytes).
 * taps:   float64 (up, window) matrix, row r = the taps of output phase r over one input window.
 * Output block b (b = 0, 1, ...) looks at buf[b*down : b*down + window] and yields `up` samples;
 * every whole block is computed, rounded half to even, clipped to int16, and its input dropped.
 */
static PyObject *
process(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "process() takes 7 arguments");
        return NULL;
    }
    Py_ssize_t held = PyLong_AsSsize_t(args[1]);
    Py_ssize_t window = PyLong_AsSsize_t(args[4]);
    Py_ssize_t up = PyLong_AsSsize_t(args[5]);
    Py_ssize_t down = PyLong_AsSsize_t(args[6]);
    if ((held == -1 || window == -1 || up == -1 || down == -1) && PyErr_Occurred()) {
        return NULL;
    }
    if (held < 0 || window < 1 || up < 1 || down < 1) {
        PyErr_SetString(PyExc_ValueError, "process(): negative or zero sizes");
        return NULL;
    }
    if (window > MAX_WINDOW || up > MAX_RATIO || down > MAX_RATIO) {
        /* Far above any design (window 91, up 2, down 3), and keeps every product below in range. */
        PyErr_SetString(PyExc_ValueError, "process(): window, up or down too large");
        return NULL;
    }
    Py_buffer buf, pcm, taps;
    if (PyObject_GetBuffer(args[0], &buf, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(args[2], &pcm, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    if (PyObject_GetBuffer(args[3], &taps, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&pcm);
        PyBuffer_Release(&buf);
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t capacity = buf.len / (Py_ssize_t)sizeof(double);
    Py_ssize_t added = pcm.len / 2;
    if (!is_double(&buf) || !is_double(&taps)) {
        PyErr_SetString(PyExc_ValueError, "buf and taps must hold float64");
        goto done;
    }
    if (pcm.len & 1) {
        PyErr_SetString(PyExc_ValueError, "PCM16 needs an even number of bytes");
        goto done;
    }
    if (taps.len != (Py_ssize_t)sizeof(double) * up * window) {
        PyErr_SetString(PyExc_ValueError, "taps is not an up x window float64 matrix");
        goto done;
    }
    if (held > capacity || added > capacity - held) {
        PyErr_SetString(PyExc_ValueError, "the buffer has no room for the chunk");
        goto done;
    }
    double *x = (double *)buf.buf;
    const uint8_t *in = (const uint8_t *)pcm.buf;
    for (Py_ssize_t i = 0; i < added; i++) {
        /* Little-endian on every host: assemble the sample from its two bytes. */
        x[held + i] = (double)(int16_t)(uint16_t)(in[2 * i] | (in[2 * i + 1] << 8));
    }
    Py_ssize_t n = held + added;
    Py_ssize_t blocks = n >= window ? (n - window) / down + 1 : 0;
    PyObject *out = PyBytes_FromStringAndSize(NULL, blocks * up * 2);
    if (out == NULL) {
        goto done;
    }
    uint8_t *o = (uint8_t *)PyBytes_AS_STRING(out);
    const double *h = (const double *)taps.buf;
    /* For down > 1 the input of SPAN blocks is first split into its `down` phases (sample i to phase
     * i % down, at i / down), so that tap k of block j, input (j + k/down)*down + k%down, is element
     * j + k/down of phase k%down: the inner loop below then reads contiguous memory for every rate. */
    Py_ssize_t reach = SPAN + window / down + 1; /* samples per phase one SPAN reads */
    /* Scratch: where each tap's inputs start (window pointers), then the phases (down > 1). */
    const double **starts = NULL;
    double *phases = NULL;
    if (blocks > 0) {
        size_t pointers = (size_t)window * sizeof(double *);
        size_t split = down > 1 ? (size_t)(down * reach) * sizeof(double) : 0;
        starts = PyMem_Malloc(pointers + split);
        if (starts == NULL) {
            Py_DECREF(out);
            PyErr_NoMemory();
            goto done;
        }
        if (down > 1) {
            phases = (double *)((char *)starts + pointers);
        }
    }
    double acc[SPAN];
    /* SPAN blocks at a time, one output phase (r) at a time. */
    for (Py_ssize_t b0 = 0; b0 < blocks; b0 += SPAN) {
        Py_ssize_t span = blocks - b0 < SPAN ? blocks - b0 : SPAN;
        const double *w = x + b0 * down; /* (b0 + span - 1)*down + window <= n, by the choice of blocks */
        Py_ssize_t stride = 0;
        if (phases != NULL) {
            /* What this SPAN reads: w[0 : (span - 1)*down + window]. */
            Py_ssize_t len = (span - 1) * down + window;
            stride = reach;
            for (Py_ssize_t i = 0; i < len; i++) {
                phases[(i % down) * reach + i / down] = w[i];
            }
        }
        for (Py_ssize_t k = 0, m = 0, q = 0; k < window; k++) {
            starts[k] = phases == NULL ? w + k : phases + m * stride + q;
            if (++m == down) {
                m = 0;
                q++;
            }
        }
        for (Py_ssize_t r = 0; r < up; r++) {
            const double *t = h + r * window;
            dot_span(acc, starts, t, window, span);
            uint8_t *oj = o + 2 * (b0 * up + r);
            for (Py_ssize_t j = 0; j < span; j++) {
                double v = nearbyint(acc[j]);
                int32_t s = v > 32767.0 ? 32767 : v < -32768.0 ? -32768 : (int32_t)v;
                uint16_t u = (uint16_t)(int16_t)s;
                oj[0] = (uint8_t)(u & 0xff);
                oj[1] = (uint8_t)(u >> 8);
                oj += 2 * up;
            }
        }
    }
    PyMem_Free(starts);
    Py_ssize_t consumed = blocks * down;
    memmove(x, x + consumed, (size_t)(n - consumed) * sizeof(double));
    result = Py_BuildValue("(Nn)", out, n - consumed);
done:
    PyBuffer_Release(&taps);
    PyBuffer_Release(&pcm);
    PyBuffer_Release(&buf);
    return result;
}

static PyMethodDef methods[] = {
    {"process", (PyCFunction)(void (*)(void))process, METH_FASTCALL,
     "process(buf, held, pcm, taps, window, up, down) -> (bytes, held): one chunk through the FIR."},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot slots[] = {
/* No module state: safe in every interpreter, and needs no GIL of its own (a resampler's buffer is
 * used by one call's task at a time, as the NumPy loop's is). */
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_polyphase", "The streaming resampler's inner loop (resample.py).", 0, methods,
    slots, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__polyphase(void)
{
    return PyModuleDef_Init(&module);
}
