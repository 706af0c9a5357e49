/* hannoy._fastconv: a list or tuple of numbers -> float32 bytes, in one pass.
 *
 * Packer(dims).pack(seq) returns bytes of dims native float32 values when seq is a list or
 * a tuple of exactly dims numbers that each convert to a finite float32; otherwise None, and
 * the caller takes its general path (hannoy._convert.as_vector), which raises the error it
 * always raised. The conversion is struct.pack("=<dims>f", *seq)'s: float(x) as a C double,
 * then rounded to float32 (round to nearest); values that round beyond float32's range
 * become inf here and are refused like NaN and inf.
 *
 * Only an exception that is not an Exception (KeyboardInterrupt, SystemExit...) raised by an
 * element's __float__ propagates; any other failure is a plain None.
 *
 * Built twice (see setup.py): against the full C API (the lists' and tuples' item arrays,
 * PyFloat_AS_DOUBLE) for the building CPython, and with Py_LIMITED_API defined
 * (_fastconv_abi3.c: PyList_GetItem, PyFloat_AsDouble, function calls per element, about 4x
 * slower) as _fastconv.abi3.so for every other CPython >= 3.9. The macros below are the only
 * difference.
 *
 * The full-API build also has Searcher(address, dims): search(handle, query, k, ef) runs
 * by_vec's search through the library's hannoy_reader_search_vec at that address (no cffi:
 * its argument conversions cost more than the rest of a by_vec call on a small index), with
 * the GIL released, and returns the [(id, distance), ...] list; None when query is not a
 * C-contiguous buffer of dims float32 values (the caller takes its general path), or
 * (status, message) when the library refused the search (the caller raises). The abi3 build
 * has no Searcher (METH_FASTCALL and the buffer protocol are not in the 3.9 limited API): by_vec
 * calls the library through cffi there.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef Py_LIMITED_API
/* src is the list or tuple the values are read from (a list snapshot once taken) */
#define SEQ_SIZE(seq, is_list) ((is_list) ? PyList_Size(seq) : PyTuple_Size(seq))
#define SEQ_ITEM(src, is_list, i) ((is_list) ? PyList_GetItem(src, i) : PyTuple_GetItem(src, i))
#define FLOAT_VALUE(o) PyFloat_AsDouble(o) /* an exact float: cannot fail */
#define BYTES_DATA(b) PyBytes_AsString(b)
#else
#define SEQ_SIZE(seq, is_list) Py_SIZE(seq)
#define SEQ_ITEM(src, is_list, i) ((void)(src), items[i])
#define FLOAT_VALUE(o) PyFloat_AS_DOUBLE(o)
#define BYTES_DATA(b) PyBytes_AS_STRING(b)
#endif

typedef struct {
    PyObject_HEAD
    Py_ssize_t dims;
} Packer;

static PyObject *
Packer_pack(Packer *self, PyObject *seq)
{
    Py_ssize_t n = self->dims, i;
#ifndef Py_LIMITED_API
    PyObject **items;
#endif
    PyObject *src = seq;
    PyObject *out;
    PyObject *snapshot = NULL;
    float *dst;
    int is_list;

    if (PyList_CheckExact(seq))
        is_list = 1;
    else if (PyTuple_CheckExact(seq))
        is_list = 0;
    else
        Py_RETURN_NONE;
    if (SEQ_SIZE(seq, is_list) != n)
        Py_RETURN_NONE;
    out = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(float));
    if (out == NULL)
        return NULL;
    if (SEQ_SIZE(seq, is_list) != n) /* changed by a finalizer the allocation ran */
        goto fallback;
    dst = (float *)BYTES_DATA(out);
#ifndef Py_LIMITED_API
    items = is_list ? ((PyListObject *)seq)->ob_item : ((PyTupleObject *)seq)->ob_item;
#endif
    for (i = 0; i < n; i++) {
        PyObject *o = SEQ_ITEM(src, is_list, i);
        double x;
        float f;
        if (o == NULL) /* limited API only: cannot happen (the length was checked) */
            goto error;
        if (PyFloat_CheckExact(o)) {
            x = FLOAT_VALUE(o);
        }
        else if (PyLong_CheckExact(o) || PyBool_Check(o)) {
            /* int.__float__ without the float object (and no Python code runs) */
            x = PyLong_AsDouble(o);
            if (x == -1.0 && PyErr_Occurred()) {
                PyErr_Clear(); /* OverflowError: beyond a double */
                goto fallback;
            }
        }
        else {
            /* Anything else goes through its __float__ (PyFloat_AsDouble, as struct.pack),
             * which may run Python code that changes the list: go on from a copy taken now,
             * before any such code ran, so every element is the one struct.pack(*seq) sees. */
            if (is_list && snapshot == NULL) {
                snapshot = PyList_GetSlice(seq, 0, n);
                if (snapshot == NULL)
                    goto error;
                src = snapshot;
#ifndef Py_LIMITED_API
                items = ((PyListObject *)snapshot)->ob_item;
#endif
                o = SEQ_ITEM(src, is_list, i);
            }
            x = PyFloat_AsDouble(o);
            if (x == -1.0 && PyErr_Occurred()) {
                if (!PyErr_ExceptionMatches(PyExc_Exception))
                    goto error; /* KeyboardInterrupt, SystemExit...: propagates */
                PyErr_Clear();
                goto fallback;
            }
        }
        f = (float)x;
        if (!isfinite(f))
            goto fallback;
        dst[i] = f;
    }
    Py_XDECREF(snapshot);
    return out;

fallback:
    Py_XDECREF(snapshot);
    Py_DECREF(out);
    Py_RETURN_NONE;
error:
    Py_XDECREF(snapshot);
    Py_DECREF(out);
    return NULL;
}

static PyObject *
Packer_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Py_ssize_t dims;
    Packer *self;
    static char *kwlist[] = {"dims", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "n:Packer", kwlist, &dims))
        return NULL;
    if (dims < 1 || dims > PY_SSIZE_T_MAX / (Py_ssize_t)sizeof(float)) {
        PyErr_SetString(PyExc_ValueError, "dims must be a positive integer");
        return NULL;
    }
    self = (Packer *)PyType_GenericAlloc(type, 0);
    if (self == NULL)
        return NULL;
    self->dims = dims;
    return (PyObject *)self;
}

static void
Packer_dealloc(PyObject *self)
{
    /* a heap type: its instances hold a reference to it */
    PyTypeObject *type = Py_TYPE(self);
    freefunc tp_free = (freefunc)PyType_GetSlot(type, Py_tp_free);
    tp_free(self);
    Py_DECREF(type);
}

static PyObject *
Packer_get_dims(Packer *self, void *closure)
{
    (void)closure;
    return PyLong_FromSsize_t(self->dims);
}

static PyMethodDef Packer_methods[] = {
    {"pack", (PyCFunction)Packer_pack, METH_O,
     "pack(seq) -> bytes or None: dims finite float32 values from a list or tuple of "
     "numbers, or None when seq is anything else (see the module's doc)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Packer_getset[] = {
    {"dims", (getter)Packer_get_dims, NULL, "number of values per vector", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* a type from a spec (a heap type), which the limited API requires */
static PyType_Slot Packer_slots[] = {
    {Py_tp_doc, (void *)"Packer(dims): converts lists and tuples of dims numbers to float32 bytes."},
    {Py_tp_new, (void *)Packer_new},
    {Py_tp_dealloc, (void *)Packer_dealloc},
    {Py_tp_methods, Packer_methods},
    {Py_tp_getset, Packer_getset},
    {0, NULL},
};

static PyType_Spec Packer_spec = {
    .name = "hannoy._fastconv.Packer",
    .basicsize = sizeof(Packer),
    .itemsize = 0,
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = Packer_slots,
};

#ifndef Py_LIMITED_API
/* hannoy_reader_search_vec's signature (capi/main.go, capi/ABI.md). */
typedef int (*search_vec_fn)(uint64_t h, void *query, uint32_t dims, uint32_t k, uint32_t ef,
                             uint32_t *ids, float *dists, uint32_t *count, char **err);

typedef struct {
    PyObject_HEAD
    search_vec_fn fn;
    Py_ssize_t dims;
} Searcher;

/* a positive uint32 argument, or -1 with an exception set */
static int64_t
positive_u32(PyObject *o, const char *what)
{
    unsigned long long v;
    if (!PyLong_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int", what);
        return -1;
    }
    v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    if (v < 1 || v > UINT32_MAX) {
        PyErr_Format(PyExc_ValueError, "%s must be between 1 and 2**32 - 1", what);
        return -1;
    }
    return (int64_t)v;
}

/* results of at most this many neighbours live on the stack */
#define SMALL_K 64

static PyObject *
Searcher_search(Searcher *self, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned long long h;
    int64_t k, ef;
    Py_buffer view;
    uint32_t ids_small[SMALL_K], *ids = ids_small;
    float dists_small[SMALL_K], *dists = dists_small;
    uint32_t count = 0, i;
    char *err = NULL;
    int rc;
    PyObject *out;

    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "search(handle, query, k, ef) takes 4 arguments");
        return NULL;
    }
    h = PyLong_AsUnsignedLongLong(args[0]);
    if (h == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if ((k = positive_u32(args[2], "k")) < 0 || (ef = positive_u32(args[3], "ef")) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_C_CONTIGUOUS) < 0) {
        if (!PyErr_ExceptionMatches(PyExc_Exception))
            return NULL;
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if (view.len != self->dims * (Py_ssize_t)sizeof(float)) {
        PyBuffer_Release(&view);
        Py_RETURN_NONE;
    }
    if (k > SMALL_K) {
        ids = PyMem_Malloc((size_t)k * sizeof(uint32_t));
        dists = PyMem_Malloc((size_t)k * sizeof(float));
        if (ids == NULL || dists == NULL) {
            PyMem_Free(ids);
            PyMem_Free(dists);
            PyBuffer_Release(&view);
            return PyErr_NoMemory();
        }
    }
    Py_BEGIN_ALLOW_THREADS
    rc = self->fn((uint64_t)h, view.buf, (uint32_t)self->dims, (uint32_t)k, (uint32_t)ef, ids, dists,
                  &count, &err);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (rc != 0) {
        /* the library's message, freed here (hannoy_free is free) */
        PyObject *msg;
        if (err != NULL) {
            msg = PyUnicode_DecodeUTF8(err, (Py_ssize_t)strlen(err), "replace");
            free(err);
        }
        else {
            Py_INCREF(Py_None);
            msg = Py_None;
        }
        out = msg != NULL ? Py_BuildValue("(iN)", rc, msg) : NULL;
        goto done;
    }
    if (count > (uint32_t)k)
        count = (uint32_t)k;
    out = PyList_New(count);
    for (i = 0; out != NULL && i < count; i++) {
        PyObject *id = PyLong_FromUnsignedLong(ids[i]);
        PyObject *dist = PyFloat_FromDouble((double)dists[i]);
        PyObject *pair = (id != NULL && dist != NULL) ? PyTuple_Pack(2, id, dist) : NULL;
        Py_XDECREF(id);
        Py_XDECREF(dist);
        if (pair == NULL)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, i, pair);
    }
done:
    if (ids != ids_small) {
        PyMem_Free(ids);
        PyMem_Free(dists);
    }
    return out;
}

static PyObject *
Searcher_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    unsigned long long address;
    Py_ssize_t dims;
    Searcher *self;
    static char *kwlist[] = {"address", "dims", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Kn:Searcher", kwlist, &address, &dims))
        return NULL;
    if (address == 0 || dims < 1 || dims > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "Searcher needs a function address and 1 <= dims < 2**32");
        return NULL;
    }
    self = (Searcher *)PyType_GenericAlloc(type, 0);
    if (self == NULL)
        return NULL;
    self->fn = (search_vec_fn)(uintptr_t)address;
    self->dims = dims;
    return (PyObject *)self;
}

static PyMethodDef Searcher_methods[] = {
    {"search", (PyCFunction)(void (*)(void))Searcher_search, METH_FASTCALL,
     "search(handle, query, k, ef) -> [(id, distance), ...], None (query is not dims "
     "contiguous float32 values) or (status, message) (see the module's doc)."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot Searcher_slots[] = {
    {Py_tp_doc, (void *)"Searcher(address, dims): by_vec's search without cffi."},
    {Py_tp_new, (void *)Searcher_new},
    {Py_tp_dealloc, (void *)Packer_dealloc},
    {Py_tp_methods, Searcher_methods},
    {0, NULL},
};

static PyType_Spec Searcher_spec = {
    .name = "hannoy._fastconv.Searcher",
    .basicsize = sizeof(Searcher),
    .itemsize = 0,
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = Searcher_slots,
};
#endif /* Py_LIMITED_API */

static struct PyModuleDef fastconv_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "hannoy._fastconv",
    .m_doc = "Lists and tuples of numbers to float32 bytes for add_item and by_vec; by_vec's "
             "search without cffi.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__fastconv(void)
{
    PyObject *m, *type;
    m = PyModule_Create(&fastconv_module);
    if (m == NULL)
        return NULL;
    type = PyType_FromSpec(&Packer_spec);
    if (type == NULL || PyModule_AddObject(m, "Packer", type) < 0) {
        Py_XDECREF(type);
        Py_DECREF(m);
        return NULL;
    }
#ifndef Py_LIMITED_API
    type = PyType_FromSpec(&Searcher_spec);
    if (type == NULL || PyModule_AddObject(m, "Searcher", type) < 0) {
        Py_XDECREF(type);
        Py_DECREF(m);
        return NULL;
    }
#endif
    return m;
}
