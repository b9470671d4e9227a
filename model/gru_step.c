/* model._gru_step: the serving GRU step in one call, the same bits as model.gru_kernel.step_numpy.
 *
 * Built by stream.native_build beside the compiled hot modules, with -ffp-contract=off (no fused
 * multiply-add: every product and sum is rounded on its own, as numpy rounds them). The arithmetic,
 * and why it is fixed to the last bit, is documented in model/gru_kernel.py; keep the two in step.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define INV_LN2 1.4426950408889634
#define LN2_HI 6.93147180369123816490e-01
#define LN2_LO 1.90821492927058770002e-10
#define ROUND 6755399441055744.0
#define CLAMP 40.0
#define MAX_UNITS 1024

#define ROUND_BITS 0x4338000000000000ULL /* the bits of ROUND */

/* tanh32 of n floats (x and out may be the same array). Branchless over arrays so the compiler can
 * vectorise it: 2**k is built from the bits of y / ln 2 + ROUND (whose low mantissa bits are k), the
 * same power of two model.gru_kernel takes from a table; exp(y) - 1 is p itself when k is 0. */
static inline __attribute__((always_inline)) void tanh32_n(const float *x, float *out, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        double d = (double)x[i];
        double y = 2.0 * fabs(d);
        y = (y < CLAMP) ? y : CLAMP;
        double kk = y * INV_LN2 + ROUND;
        double k = kk - ROUND;
        double r = (y - k * LN2_HI) - k * LN2_LO;
        double q = 1.0 / 40320.0;
        q = q * r + 1.0 / 5040.0;
        q = q * r + 1.0 / 720.0;
        q = q * r + 1.0 / 120.0;
        q = q * r + 1.0 / 24.0;
        q = q * r + 1.0 / 6.0;
        q = q * r + 1.0 / 2.0;
        q = q * r + 1.0;
        double p = q * r;
        uint64_t bits, scale_bits;
        double scale;
        memcpy(&bits, &kk, sizeof bits);
        scale_bits = (bits - ROUND_BITS + 1023u) << 52;
        memcpy(&scale, &scale_bits, sizeof scale);
        double em1 = (k == 0.0) ? p : (1.0 + p) * scale - 1.0;
        out[i] = (float)copysign(em1 / (em1 + 2.0), d);
    }
}

static int need(Py_buffer *b, Py_ssize_t bytes, const char *name) {
    if (b->len != bytes) {
        PyErr_Format(PyExc_ValueError, "gru_step: %s has %zd bytes, expected %zd", name, b->len, bytes);
        return 0;
    }
    return 1;
}

/* The rows of one step; compiled twice on x86-64 (AVX2 and the baseline, chosen at load time by the
 * CPU, through glibc's ifunc): the same IEEE operations in the same order either way, so the same
 * bits, only wider vectors. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__)
__attribute__((target_clones("avx2", "default")))
#endif
static void step_rows(float *ov, const float *hv, const int64_t *it, const int64_t *ty, const float *gii,
                      const float *git, const float *wv, const float *bv, const float *ev, Py_ssize_t batch,
                      Py_ssize_t units, Py_ssize_t e, Py_ssize_t window, Py_ssize_t n_artifact) {
    const Py_ssize_t g3 = 3 * units, hidden = units + e + window;
    float gh[3 * MAX_UNITS], gi[3 * MAX_UNITS], pre[2 * MAX_UNITS];
    for (Py_ssize_t row = 0; row < batch; row++) {
        const float *g = hv + row * hidden;
        float *o = ov + row * hidden;
        const int64_t item = it[row];
        if (item < 0) {
            memcpy(o, g, (size_t)hidden * sizeof(float));
            continue;
        }
        const float *a = gii + item * g3, *t = git + ty[row] * g3;
        for (Py_ssize_t k = 0; k < g3; k++) gi[k] = a[k] + t[k];
        for (Py_ssize_t k = 0; k < g3; k++) gh[k] = g[0] * wv[k];
        for (Py_ssize_t j = 1; j < units; j++) {
            const float gj = g[j];
            const float *wj = wv + j * g3;
            for (Py_ssize_t k = 0; k < g3; k++) gh[k] = gh[k] + gj * wj[k];
        }
        for (Py_ssize_t k = 0; k < g3; k++) gh[k] = gh[k] + bv[k];
        /* The gates as arrays: pre-activations, one vectorisable tanh pass, then the update. */
        for (Py_ssize_t k = 0; k < 2 * units; k++) pre[k] = 0.5f * (gi[k] + gh[k]);
        tanh32_n(pre, pre, 2 * units);
        for (Py_ssize_t k = 0; k < 2 * units; k++) pre[k] = 0.5f + 0.5f * pre[k]; /* r, then z */
        for (Py_ssize_t k = 0; k < units; k++) gi[2 * units + k] = gi[2 * units + k] + pre[k] * gh[2 * units + k];
        tanh32_n(gi + 2 * units, gi + 2 * units, units);
        for (Py_ssize_t k = 0; k < units; k++) {
            const float n = gi[2 * units + k];
            o[k] = n + pre[units + k] * (g[k] - n);
        }
        if (e) memcpy(o + units, ev + item * e, (size_t)e * sizeof(float));
        if (window) {
            const float *last = g + hidden - window;
            float *dst = o + hidden - window;
            if (item < n_artifact) {
                memmove(dst + 1, last, (size_t)(window - 1) * sizeof(float));
                dst[0] = (float)(item + 1);
            } else {
                memcpy(dst, last, (size_t)window * sizeof(float));
            }
        }
    }
}

/* step(out, h, items, types, gi_item, gi_type, w_hh_t, b_hh, emb or None, units, window, n_artifact,
 *      n_event_types): n_event_types bounds every row's type (ValueError beyond, as the numpy path).
 * out, h: float32 (B, H); items, types: int64 (B,); gi_item: float32 (N, 3U); gi_type: float32
 * (T, 3U); w_hh_t: float32 (U, 3U); b_hh: float32 (3U,); emb: float32 (N, E) or None, H = U + E +
 * window. Every buffer C-contiguous (the caller makes them so). */
static PyObject *step(PyObject *self, PyObject *args) {
    Py_buffer out, h, items, types, gi_item, gi_type, w, b, emb;
    PyObject *emb_obj;
    Py_ssize_t units, window, n_artifact, n_event_types, batch, hidden, n_items, n_types, e = 0;
    PyObject *result = NULL;
    int have_emb = 0;
    memset(&emb, 0, sizeof(emb));
    if (!PyArg_ParseTuple(args, "w*y*y*y*y*y*y*y*Onnnn", &out, &h, &items, &types, &gi_item, &gi_type,
                          &w, &b, &emb_obj, &units, &window, &n_artifact, &n_event_types))
        return NULL;
    if (emb_obj != Py_None) {
        if (PyObject_GetBuffer(emb_obj, &emb, PyBUF_SIMPLE) < 0) goto done_noemb;
        have_emb = 1;
    }
    if (units < 1 || units > MAX_UNITS || window < 0) {
        PyErr_SetString(PyExc_ValueError, "gru_step: bad units or window");
        goto done;
    }
    const Py_ssize_t g3 = 3 * units;
    batch = items.len / 8;
    n_items = gi_item.len / (Py_ssize_t)(4 * g3);
    n_types = gi_type.len / (Py_ssize_t)(4 * g3);
    if (have_emb && n_items > 0) e = emb.len / (4 * n_items);
    hidden = units + e + window;
    if (!need(&items, batch * 8, "items") || !need(&types, batch * 8, "types") ||
        !need(&h, batch * hidden * 4, "h") || !need(&out, batch * hidden * 4, "out") ||
        !need(&gi_item, n_items * g3 * 4, "gi_item") || !need(&gi_type, n_types * g3 * 4, "gi_type") ||
        !need(&w, units * g3 * 4, "w_hh_t") || !need(&b, g3 * 4, "b_hh") ||
        (have_emb && !need(&emb, n_items * e * 4, "emb")))
        goto done;
    const int64_t *it = (const int64_t *)items.buf, *ty = (const int64_t *)types.buf;
    for (Py_ssize_t row = 0; row < batch; row++) {
        if (ty[row] < 0 || ty[row] >= n_event_types) {
            PyErr_SetString(PyExc_ValueError, "event_types must index stream.contract.EVENT_TYPES");
            goto done;
        }
        if (it[row] >= n_items || ty[row] >= n_types) {
            PyErr_SetString(PyExc_IndexError, "gru_step: item or event type index out of range");
            goto done;
        }
    }
    {
        const float *ev = have_emb ? (const float *)emb.buf : NULL;
        Py_BEGIN_ALLOW_THREADS
        step_rows((float *)out.buf, (const float *)h.buf, it, ty, (const float *)gi_item.buf,
                  (const float *)gi_type.buf, (const float *)w.buf, (const float *)b.buf, ev, batch, units, e,
                  window, n_artifact);
        Py_END_ALLOW_THREADS
    }
    Py_INCREF(Py_None);
    result = Py_None;
done:
    if (have_emb) PyBuffer_Release(&emb);
done_noemb:
    PyBuffer_Release(&out);
    PyBuffer_Release(&h);
    PyBuffer_Release(&items);
    PyBuffer_Release(&types);
    PyBuffer_Release(&gi_item);
    PyBuffer_Release(&gi_type);
    PyBuffer_Release(&w);
    PyBuffer_Release(&b);
    return result;
}

/* gather(out, rows): row i of out (float32 (B, H)) is rows[i], a float32 buffer of H values, or zeros
 * where rows[i] is None (a user with no state yet): np.stack of the users' states without its cost. */
static PyObject *gather(PyObject *self, PyObject *args) {
    Py_buffer out, row;
    PyObject *rows;
    if (!PyArg_ParseTuple(args, "w*O!", &out, &PyList_Type, &rows)) return NULL;
    PyObject *result = NULL;
    const Py_ssize_t n = PyList_GET_SIZE(rows);
    if (n == 0 ? out.len != 0 : out.len % n != 0) {
        PyErr_SetString(PyExc_ValueError, "gather: out does not hold one row per state");
        goto done;
    }
    const Py_ssize_t width = n ? out.len / n : 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(rows, i);
        char *dst = (char *)out.buf + i * width;
        if (item == Py_None) {
            memset(dst, 0, (size_t)width);
            continue;
        }
        if (PyObject_GetBuffer(item, &row, PyBUF_SIMPLE) < 0) goto done;
        if (row.len != width) {
            PyBuffer_Release(&row);
            PyErr_Format(PyExc_ValueError, "gather: state %zd has %zd bytes, not %zd", i, row.len, width);
            goto done;
        }
        memcpy(dst, row.buf, (size_t)width);
        PyBuffer_Release(&row);
    }
    Py_INCREF(Py_None);
    result = Py_None;
done:
    PyBuffer_Release(&out);
    return result;
}

static PyObject *tanh_into(PyObject *self, PyObject *args) {
    Py_buffer out, x;
    if (!PyArg_ParseTuple(args, "w*y*", &out, &x)) return NULL;
    PyObject *result = NULL;
    if (need(&out, x.len, "out") && x.len % 4 == 0) {
        const float *xv = (const float *)x.buf;
        float *ov = (float *)out.buf;
        tanh32_n(xv, ov, x.len / 4);
        Py_INCREF(Py_None);
        result = Py_None;
    } else if (!PyErr_Occurred()) {
        PyErr_SetString(PyExc_ValueError, "tanh_into: x is not float32");
    }
    PyBuffer_Release(&out);
    PyBuffer_Release(&x);
    return result;
}

static PyMethodDef methods[] = {
    {"step", step, METH_VARARGS, "One GRU step per row into out (see model.gru_kernel)."},
    {"gather", gather, METH_VARARGS, "Users' states (or None: zeros) into the rows of out."},
    {"tanh_into", tanh_into, METH_VARARGS, "tanh32 of a float32 buffer into out (for the tests)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "model._gru_step", NULL, -1, methods};

PyMODINIT_FUNC PyInit__gru_step(void) {
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "MAX_UNITS", MAX_UNITS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
