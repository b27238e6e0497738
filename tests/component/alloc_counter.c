/* Counts the interpreter's memory allocations (PyMem and PyObject domains) made on the thread that started
   counting (the event loop's): what a "per request" figure of the hot-path test is made of. Threads left
   running by earlier tests in the same process (a log writer, an executor) are not the request path's.
   Loaded with ctypes.PyDLL, so every call holds the GIL. */
#include <Python.h>
#include <pythread.h>

static PyMemAllocatorEx original_mem, original_obj;
static unsigned long long allocations;
static unsigned long counting_thread;

#define COUNT() do { if (PyThread_get_thread_ident() == counting_thread) allocations++; } while (0)

static void *counting_malloc(void *ctx, size_t size) {
    PyMemAllocatorEx *a = (PyMemAllocatorEx *)ctx;
    COUNT();
    return a->malloc(a->ctx, size);
}

static void *counting_calloc(void *ctx, size_t nelem, size_t elsize) {
    PyMemAllocatorEx *a = (PyMemAllocatorEx *)ctx;
    COUNT();
    return a->calloc(a->ctx, nelem, elsize);
}

static void *counting_realloc(void *ctx, void *ptr, size_t size) {
    PyMemAllocatorEx *a = (PyMemAllocatorEx *)ctx;
    if (ptr == NULL) COUNT();
    return a->realloc(a->ctx, ptr, size);
}

static void counting_free(void *ctx, void *ptr) {
    PyMemAllocatorEx *a = (PyMemAllocatorEx *)ctx;
    a->free(a->ctx, ptr);
}

void start_counting(void) {
    counting_thread = PyThread_get_thread_ident();
    PyMem_GetAllocator(PYMEM_DOMAIN_MEM, &original_mem);
    PyMem_GetAllocator(PYMEM_DOMAIN_OBJ, &original_obj);
    PyMemAllocatorEx mem = {&original_mem, counting_malloc, counting_calloc, counting_realloc, counting_free};
    PyMemAllocatorEx obj = {&original_obj, counting_malloc, counting_calloc, counting_realloc, counting_free};
    PyMem_SetAllocator(PYMEM_DOMAIN_MEM, &mem);
    PyMem_SetAllocator(PYMEM_DOMAIN_OBJ, &obj);
}

void stop_counting(void) {
    PyMem_SetAllocator(PYMEM_DOMAIN_MEM, &original_mem);
    PyMem_SetAllocator(PYMEM_DOMAIN_OBJ, &original_obj);
}

unsigned long long allocation_count(void) { return allocations; }
