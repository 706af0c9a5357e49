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
 * Built against the full C API (PyList_GET_ITEM, PyFloat_AS_DOUBLE): see setup.py for why.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    Py_ssize_t dims;
} Packer;

static PyObject *
Packer_pack(Packer *self, PyObject *seq)
{
    Py_ssize_t n = self->dims, i;
    PyObject **items;
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
    if (Py_SIZE(seq) != n)
        Py_RETURN_NONE;
    out = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(float));
    if (out == NULL)
        return NULL;
    if (Py_SIZE(seq) != n) /* changed by a finalizer the allocation ran */
        goto fallback;
    dst = (float *)PyBytes_AS_STRING(out);
    items = is_list ? ((PyListObject *)seq)->ob_item : ((PyTupleObject *)seq)->ob_item;
    for (i = 0; i < n; i++) {
        PyObject *o = items[i];
        double x;
        float f;
        if (PyFloat_CheckExact(o)) {
            x = PyFloat_AS_DOUBLE(o);
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
                items = ((PyListObject *)snapshot)->ob_item;
                o = items[i];
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
    self = (Packer *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->dims = dims;
    return (PyObject *)self;
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

static PyTypeObject PackerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "hannoy._fastconv.Packer",
    .tp_basicsize = sizeof(Packer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Packer(dims): converts lists and tuples of dims numbers to float32 bytes.",
    .tp_methods = Packer_methods,
    .tp_getset = Packer_getset,
    .tp_new = Packer_new,
};

static struct PyModuleDef fastconv_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "hannoy._fastconv",
    .m_doc = "Lists and tuples of numbers to float32 bytes for add_item and by_vec.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__fastconv(void)
{
    PyObject *m;
    if (PyType_Ready(&PackerType) < 0)
        return NULL;
    m = PyModule_Create(&fastconv_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&PackerType);
    if (PyModule_AddObject(m, "Packer", (PyObject *)&PackerType) < 0) {
        Py_DECREF(&PackerType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
