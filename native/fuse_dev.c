/*
 * tocfs_fuse_dev: what tocfs's own FUSE session needs on /dev/fuse and Node cannot do itself:
 * mount(2) with a /dev/fuse fd, umount2(2), reading requests off the device from the event
 * loop, writev(2) replies, the passthrough ioctls, and handing an fd over a Unix socket (a
 * live restart) or to systemd's fd store; and two glibc malloc controls a long-running daemon
 * wants (arena count, trim). src/fs/session/native.ts loads it and documents
 * each function. Every function is synchronous; failures throw an Error with .code (the errno
 * name), .errno (positive) and .syscall.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>

#include <node_api.h>
#include <uv.h>

/* From the kernel's include/uapi/linux/fuse.h (7.40, Linux 6.9); bookworm's header predates them. */
struct tocfs_fuse_backing_map {
	int32_t fd;
	uint32_t flags;
	uint64_t padding;
};
_Static_assert(sizeof(struct tocfs_fuse_backing_map) == 16, "struct fuse_backing_map is 16 bytes");
#define TOCFS_FUSE_DEV_IOC_MAGIC 229
#define TOCFS_FUSE_DEV_IOC_BACKING_OPEN _IOW(TOCFS_FUSE_DEV_IOC_MAGIC, 1, struct tocfs_fuse_backing_map)
#define TOCFS_FUSE_DEV_IOC_BACKING_CLOSE _IOW(TOCFS_FUSE_DEV_IOC_MAGIC, 2, uint32_t)

#define ADDON_VERSION 4
#define BATCH_MAX 64
#define READ_BUFFER_MAX (64u << 20)
#define HANDOVER_CHUNK (64u << 10)
#define HANDOVER_PAYLOAD_MAX ((size_t)1 << 30)
/* Room for a few fds: a sender that attaches more than one is refused, and the extras closed. */
#define HANDOVER_MAX_FDS 4

/* ---- errors ---- */

/* An Error with .code (the errno name), .errno (positive), .syscall and "<syscall>(<detail>): <strerror>". */
static napi_value errno_error(napi_env env, int err, const char *syscall, const char *detail)
{
	char message[768];
	const char *name = strerrorname_np(err);
	napi_value code, msg, error, errno_value, syscall_value;

	snprintf(message, sizeof message, "%s(%s): %s", syscall, detail, strerror(err));
	if (name == NULL)
		name = "EUNKNOWN";
	if (napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code) != napi_ok ||
	    napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg) != napi_ok ||
	    napi_create_error(env, code, msg, &error) != napi_ok ||
	    napi_create_int32(env, err, &errno_value) != napi_ok ||
	    napi_set_named_property(env, error, "errno", errno_value) != napi_ok ||
	    napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &syscall_value) != napi_ok ||
	    napi_set_named_property(env, error, "syscall", syscall_value) != napi_ok)
		return NULL;
	return error;
}

/* Throws errno_error(err, syscall, printf(fmt, ...)) and returns NULL for the caller to return. */
__attribute__((format(printf, 4, 5)))
static napi_value throw_errno(napi_env env, int err, const char *syscall, const char *fmt, ...)
{
	char detail[512];
	va_list ap;
	napi_value error;
	bool pending = false;

	va_start(ap, fmt);
	vsnprintf(detail, sizeof detail, fmt, ap);
	va_end(ap);
	if (napi_is_exception_pending(env, &pending) == napi_ok && pending)
		return NULL;
	error = errno_error(env, err, syscall, detail);
	if (error == NULL || napi_throw(env, error) != napi_ok)
		napi_throw_error(env, NULL, strerror(err));
	return NULL;
}

__attribute__((format(printf, 2, 3)))
static napi_value throw_type_error(napi_env env, const char *fmt, ...)
{
	char message[512];
	va_list ap;
	bool pending = false;

	if (napi_is_exception_pending(env, &pending) == napi_ok && pending)
		return NULL;
	va_start(ap, fmt);
	vsnprintf(message, sizeof message, fmt, ap);
	va_end(ap);
	napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", message);
	return NULL;
}

/* A failed N-API call that left no exception behind still has to surface as one. */
static napi_value throw_napi_failure(napi_env env, const char *what)
{
	bool pending = false;

	if (napi_is_exception_pending(env, &pending) == napi_ok && pending)
		return NULL;
	napi_throw_error(env, NULL, what);
	return NULL;
}

#define NAPI_OR_THROW(env, call)                                          \
	do {                                                              \
		if ((call) != napi_ok)                                    \
			return throw_napi_failure((env), "N-API: " #call); \
	} while (0)

/* ---- arguments ---- */

/* Missing arguments come as undefined, so the type checks after this catch them. */
static bool get_args(napi_env env, napi_callback_info info, size_t count, napi_value *args)
{
	size_t argc = count;

	return napi_get_cb_info(env, info, &argc, args, NULL, NULL) == napi_ok;
}

/* A JS number that is an integer in [min, max]. */
static bool get_integer(napi_env env, napi_value value, const char *name, int64_t min, int64_t max, int64_t *out)
{
	napi_valuetype type;
	double d;

	if (napi_typeof(env, value, &type) != napi_ok || type != napi_number ||
	    napi_get_value_double(env, value, &d) != napi_ok || !(d >= (double)min && d <= (double)max) ||
	    d != (double)(int64_t)d) {
		throw_type_error(env, "%s must be an integer from %lld to %lld", name, (long long)min, (long long)max);
		return false;
	}
	*out = (int64_t)d;
	return true;
}

static bool get_fd(napi_env env, napi_value value, const char *name, int *out)
{
	int64_t v;

	if (!get_integer(env, value, name, 0, INT_MAX, &v))
		return false;
	*out = (int)v;
	return true;
}

static bool get_bool(napi_env env, napi_value value, const char *name, bool *out)
{
	napi_valuetype type;

	if (napi_typeof(env, value, &type) != napi_ok || type != napi_boolean ||
	    napi_get_value_bool(env, value, out) != napi_ok) {
		throw_type_error(env, "%s must be a boolean", name);
		return false;
	}
	return true;
}

/* A malloc'd copy of a JS string without NUL characters (they would cut a path short). */
static char *get_string(napi_env env, napi_value value, const char *name)
{
	napi_valuetype type;
	size_t length, copied;
	char *s;

	if (napi_typeof(env, value, &type) != napi_ok || type != napi_string ||
	    napi_get_value_string_utf8(env, value, NULL, 0, &length) != napi_ok) {
		throw_type_error(env, "%s must be a string", name);
		return NULL;
	}
	s = malloc(length + 1);
	if (s == NULL) {
		throw_errno(env, ENOMEM, "malloc", "%s", name);
		return NULL;
	}
	if (napi_get_value_string_utf8(env, value, s, length + 1, &copied) != napi_ok) {
		free(s);
		throw_napi_failure(env, "N-API: napi_get_value_string_utf8");
		return NULL;
	}
	if (strlen(s) != length) {
		free(s);
		throw_type_error(env, "%s must not contain NUL characters", name);
		return NULL;
	}
	return s;
}

static bool get_buffer(napi_env env, napi_value value, const char *name, void **data, size_t *length)
{
	bool is_buffer = false;

	if (napi_is_buffer(env, value, &is_buffer) != napi_ok || !is_buffer ||
	    napi_get_buffer_info(env, value, data, length) != napi_ok) {
		throw_type_error(env, "%s must be a Buffer", name);
		return false;
	}
	return true;
}

static bool get_function(napi_env env, napi_value value, const char *name)
{
	napi_valuetype type;

	if (napi_typeof(env, value, &type) != napi_ok || type != napi_function) {
		throw_type_error(env, "%s must be a function", name);
		return false;
	}
	return true;
}

/* sockaddr_un for a path, or for the abstract namespace when it starts with '@'. */
static bool unix_address(const char *path, bool allow_abstract, struct sockaddr_un *addr, socklen_t *length)
{
	size_t n = strlen(path);

	memset(addr, 0, sizeof *addr);
	addr->sun_family = AF_UNIX;
	if (n == 0)
		return false;
	if (allow_abstract && path[0] == '@') {
		if (n > sizeof addr->sun_path)
			return false;
		memcpy(addr->sun_path + 1, path + 1, n - 1);
		*length = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
		return true;
	}
	if (n >= sizeof addr->sun_path)
		return false;
	memcpy(addr->sun_path, path, n + 1);
	*length = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
	return true;
}

/* ---- mount, unmount ---- */

static napi_value js_mount(napi_env env, napi_callback_info info)
{
	napi_value args[5], result = NULL;
	char *mountpoint = NULL, *source = NULL, *fs_type = NULL, *options = NULL, *data = NULL;
	bool read_only;
	int fd = -1;
	unsigned long flags;

	if (!get_args(env, info, 5, args))
		return throw_napi_failure(env, "N-API: napi_get_cb_info");
	if ((mountpoint = get_string(env, args[0], "mountpoint")) == NULL ||
	    (source = get_string(env, args[1], "source")) == NULL ||
	    (fs_type = get_string(env, args[2], "fsType")) == NULL ||
	    !get_bool(env, args[3], "readOnly", &read_only) ||
	    (options = get_string(env, args[4], "options")) == NULL)
		goto out;

	fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		throw_errno(env, errno, "open", "/dev/fuse");
		goto out;
	}
	if (asprintf(&data, "fd=%d,rootmode=40000,user_id=%u,group_id=%u%s%s", fd, (unsigned)getuid(),
		     (unsigned)getgid(), options[0] ? "," : "", options) < 0) {
		data = NULL;
		throw_errno(env, ENOMEM, "asprintf", "mount options");
		goto out;
	}
	flags = MS_NOSUID | MS_NODEV | (read_only ? MS_RDONLY : 0);
	if (mount(source, mountpoint, fs_type, flags, data) != 0) {
		throw_errno(env, errno, "mount", "%s", mountpoint);
		goto out;
	}
	if (napi_create_int32(env, fd, &result) != napi_ok) {
		/* Mounted, but JS will never learn the fd: take the mount down again. */
		umount2(mountpoint, MNT_DETACH);
		throw_napi_failure(env, "N-API: napi_create_int32");
		result = NULL;
		goto out;
	}
	fd = -1;
out:
	if (fd >= 0)
		close(fd);
	free(data);
	free(options);
	free(fs_type);
	free(source);
	free(mountpoint);
	return result;
}

static napi_value js_unmount(napi_env env, napi_callback_info info)
{
	napi_value args[2], result = NULL;
	char *mountpoint;
	bool lazy;

	if (!get_args(env, info, 2, args))
		return throw_napi_failure(env, "N-API: napi_get_cb_info");
	if ((mountpoint = get_string(env, args[0], "mountpoint")) == NULL)
		return NULL;
	if (!get_bool(env, args[1], "lazy", &lazy))
		goto out;
	if (umount2(mountpoint, lazy ? MNT_DETACH : 0) != 0) {
		throw_errno(env, errno, "umount2", "%s%s", mountpoint, lazy ? ", MNT_DETACH" : "");
		goto out;
	}
	if (napi_get_undefined(env, &result) != napi_ok)
		result = throw_napi_failure(env, "N-API: napi_get_undefined");
out:
	free(mountpoint);
	return result;
}

/* ---- reading requests from the event loop ---- */

struct reader {
	uv_poll_t poll;
	napi_env env;
	napi_ref callback;
	napi_async_context async_context;
	napi_async_cleanup_hook_handle cleanup;
	int fd;
	bool closing;
	/* Owners: the poll handle until its close callback, the JS stop() until its finalizer. */
	int refs;
	size_t size;
	char *buf;
};

static void reader_release(struct reader *r)
{
	if (--r->refs == 0)
		free(r);
}

/* Everything but the struct itself, once the poll handle is closed (or never opened). */
static void reader_free_resources(struct reader *r)
{
	if (r->cleanup != NULL) {
		napi_remove_async_cleanup_hook(r->cleanup);
		r->cleanup = NULL;
	}
	if (r->callback != NULL) {
		napi_delete_reference(r->env, r->callback);
		r->callback = NULL;
	}
	if (r->async_context != NULL) {
		napi_async_destroy(r->env, r->async_context);
		r->async_context = NULL;
	}
	free(r->buf);
	r->buf = NULL;
}

static void reader_on_closed(uv_handle_t *handle)
{
	struct reader *r = handle->data;
	napi_handle_scope scope;
	bool scoped = napi_open_handle_scope(r->env, &scope) == napi_ok;

	reader_free_resources(r);
	if (scoped)
		napi_close_handle_scope(r->env, scope);
	reader_release(r);
}

static void reader_close(struct reader *r)
{
	if (r->closing)
		return;
	r->closing = true;
	uv_close((uv_handle_t *)&r->poll, reader_on_closed);
}

/* Environment teardown (process exit, a worker ending): close the handle so the loop can close. */
static void reader_on_teardown(napi_async_cleanup_hook_handle handle, void *data)
{
	struct reader *r = data;

	(void)handle;
	reader_close(r);
}

static void surface_exception(napi_env env)
{
	bool pending = false;
	napi_value exception;

	if (napi_is_exception_pending(env, &pending) == napi_ok && pending &&
	    napi_get_and_clear_last_exception(env, &exception) == napi_ok)
		napi_fatal_exception(env, exception);
}

/* Calls onRequests with no JS on the stack: an exception it throws becomes an uncaught exception. */
static void reader_call(struct reader *r, size_t argc, napi_value *argv)
{
	napi_env env = r->env;
	napi_value callback, recv, result;

	/* napi_make_callback wants an object for `this` (undefined throws): the global, as a plain call would get. */
	if (napi_get_reference_value(env, r->callback, &callback) != napi_ok || callback == NULL ||
	    napi_get_global(env, &recv) != napi_ok) {
		surface_exception(env);
		return;
	}
	if (napi_make_callback(env, r->async_context, recv, callback, argc, argv, &result) != napi_ok)
		surface_exception(env);
}

static void reader_on_readable(uv_poll_t *handle, int status, int events)
{
	struct reader *r = handle->data;
	napi_env env = r->env;
	napi_handle_scope scope;
	napi_value batch, args[2];
	uint32_t count = 0;
	bool end = false;
	int end_errno = 0;

	(void)events;
	if (r->closing)
		return;
	if (napi_open_handle_scope(env, &scope) != napi_ok) {
		surface_exception(env);
		return;
	}
	if (napi_create_array(env, &batch) != napi_ok)
		goto failed;
	/*
	 * Also on an error status: libuv reports a POLLERR (what /dev/fuse polls as once the
	 * connection is gone) as UV_EBADF, and read() says what really happened (ENODEV).
	 */
	while (count < BATCH_MAX) {
		ssize_t n = read(r->fd, r->buf, r->size);
		napi_value request;

		if (n > 0) {
			if (napi_create_buffer_copy(env, (size_t)n, r->buf, NULL, &request) != napi_ok ||
			    napi_set_element(env, batch, count, request) != napi_ok)
				goto failed;
			count++;
			continue;
		}
		if (n == 0) {
			end = true;
			break;
		}
		if (errno == EINTR || errno == ENOENT) /* ENOENT: the request was interrupted */
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			break;
		end = true;
		end_errno = errno == ENODEV ? 0 : errno;
		break;
	}
	if (!end && status < 0) {
		end = true;
		end_errno = -status;
	}
	if (count > 0) {
		args[0] = batch;
		reader_call(r, 1, args);
	}
	/* onRequests may have called stop(): then it hears nothing more. */
	if (end && !r->closing) {
		size_t argc = 1;

		reader_close(r);
		if (napi_get_null(env, &args[0]) != napi_ok)
			goto failed;
		if (end_errno != 0) {
			char detail[32];

			snprintf(detail, sizeof detail, "%d", r->fd);
			if ((args[1] = errno_error(env, end_errno, "read", detail)) == NULL)
				goto failed;
			argc = 2;
		}
		reader_call(r, argc, args);
	}
	napi_close_handle_scope(env, scope);
	return;

failed:
	/* An N-API call failed (out of memory, most likely): stop reading and let JS hear of it. */
	reader_close(r);
	surface_exception(env);
	napi_close_handle_scope(env, scope);
}

static napi_value js_reading_stop(napi_env env, napi_callback_info info)
{
	void *data = NULL;
	napi_value undefined;

	NAPI_OR_THROW(env, napi_get_cb_info(env, info, NULL, NULL, NULL, &data));
	reader_close(data);
	NAPI_OR_THROW(env, napi_get_undefined(env, &undefined));
	return undefined;
}

static void reader_on_stop_collected(napi_env env, void *data, void *hint)
{
	(void)env;
	(void)hint;
	reader_release(data);
}

static napi_value js_start_reading(napi_env env, napi_callback_info info)
{
	napi_value args[3], handle, stop, resource_name;
	struct reader *r;
	int fd, flags, rc;
	int64_t size;
	uv_loop_t *loop;

	if (!get_args(env, info, 3, args))
		return throw_napi_failure(env, "N-API: napi_get_cb_info");
	if (!get_fd(env, args[0], "fd", &fd) ||
	    !get_integer(env, args[1], "bufferSize", 1, READ_BUFFER_MAX, &size) ||
	    !get_function(env, args[2], "onRequests"))
		return NULL;
	NAPI_OR_THROW(env, napi_get_uv_event_loop(env, &loop));

	flags = fcntl(fd, F_GETFL);
	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
		return throw_errno(env, errno, "fcntl", "%d, O_NONBLOCK", fd);

	r = calloc(1, sizeof *r);
	if (r == NULL)
		return throw_errno(env, ENOMEM, "malloc", "reader");
	r->env = env;
	r->fd = fd;
	r->size = (size_t)size;
	r->poll.data = r;
	r->buf = malloc(r->size);
	if (r->buf == NULL) {
		free(r);
		return throw_errno(env, ENOMEM, "malloc", "%lld-byte read buffer", (long long)size);
	}

	if (napi_create_reference(env, args[2], 1, &r->callback) != napi_ok ||
	    napi_create_object(env, &handle) != napi_ok ||
	    napi_create_string_utf8(env, "tocfs:fuse-dev-read", NAPI_AUTO_LENGTH, &resource_name) != napi_ok ||
	    napi_async_init(env, handle, resource_name, &r->async_context) != napi_ok ||
	    napi_create_function(env, "stop", NAPI_AUTO_LENGTH, js_reading_stop, r, &stop) != napi_ok ||
	    napi_set_named_property(env, handle, "stop", stop) != napi_ok)
		goto failed_before_poll;
	if (napi_add_finalizer(env, stop, r, reader_on_stop_collected, NULL, NULL) != napi_ok)
		goto failed_before_poll;
	r->refs++;

	rc = uv_poll_init(loop, &r->poll, fd);
	if (rc != 0) {
		r->closing = true;
		reader_free_resources(r);
		return throw_errno(env, -rc, "uv_poll_init", "%d", fd);
	}
	r->refs++;
	rc = uv_poll_start(&r->poll, UV_READABLE, reader_on_readable);
	if (rc != 0) {
		reader_close(r);
		return throw_errno(env, -rc, "uv_poll_start", "%d", fd);
	}
	if (napi_add_async_cleanup_hook(env, reader_on_teardown, r, &r->cleanup) != napi_ok) {
		r->cleanup = NULL;
		reader_close(r);
		return throw_napi_failure(env, "N-API: napi_add_async_cleanup_hook");
	}
	return handle;

failed_before_poll:
	/* stop() (if it exists) stays a no-op; its finalizer, if attached, frees r. */
	r->closing = true;
	reader_free_resources(r);
	if (r->refs == 0)
		free(r);
	return throw_napi_failure(env, "N-API: startReading");
}

/* ---- replies ---- */

static napi_value js_write(napi_env env, napi_callback_info info)
{
	napi_value args[2], result, element;
	struct iovec *iov;
	uint32_t count, i;
	bool is_array = false;
	ssize_t n;
	int fd;

	if (!get_args(env, info, 2, args))
		return throw_napi_failure(env, "N-API: napi_get_cb_info");
	if (!get_fd(env, args[0], "fd", &fd))
		return NULL;
	if (napi_is_array(env, args[1], &is_array) != napi_ok || !is_array ||
	    napi_get_array_length(env, args[1], &count) != napi_ok)
		return throw_type_error(env, "buffers must be an array of Buffers");
	if (count > IOV_MAX)
		return throw_type_error(env, "buffers must have at most %d elements", IOV_MAX);
	iov = calloc(count > 0 ? count : 1, sizeof *iov);
	if (iov == NULL)
		return throw_errno(env, ENOMEM, "malloc", "%u iovecs", count);
	for (i = 0; i < count; i++) {
		char name[32];

		snprintf(name, sizeof name, "buffers[%u]", i);
		if (napi_get_element(env, args[1], i, &element) != napi_ok) {
			free(iov);
			return throw_napi_failure(env, "N-API: napi_get_element");
		}
		if (!get_buffer(env, element, name, &iov[i].iov_base, &iov[i].iov_len)) {
			free(iov);
			return NULL;
		}
	}
	do
		n = writev(fd, iov, (int)count);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		n = -errno;
	free(iov);
	NAPI_OR_THROW(env, napi_create_int64(env, (int64_t)n, &result));
	return result;
}

/* ---- passthrough ---- */

static napi_value js_backing_open(napi_env env, napi_callback_info info)
{
	napi_value args[2], result;
	struct tocfs_fuse_backing_map map;
	int dev_fd, file_fd, id;

	if (!get_args(env, info, 2, args))
		return throw_napi_failure(env, "N-API: napi_get_cb_info");
	if (!get_fd(env, args[0], "devFd", &dev_fd) || !get_fd(env, args[1], "fileFd", &file_fd))
		return NULL;
	memset(&map, 0, sizeof map);
	map.fd = file_fd;
	id = ioctl(dev_fd, TOCFS_FUSE_DEV_IOC_BACKING_OPEN, &map);
	if (id < 0)
		return throw_errno(env, errno, "ioctl", "%d, FUSE_DEV_IOC_BACKING_OPEN, fd %d", dev_fd, file_fd);
	NAPI_OR_THROW(env, napi_create_int32(env, id, &result));
	return result;
}

static napi_value js_backing_close(napi_env env, napi_callback_info info)
{
	napi_value args[2], result;
	int64_t id64;
	uint32_t id;
	int dev_fd;

	if (!get_args(env, info, 2, args))
		return throw_napi_failure(env, "N-API: napi_get_cb_info");
	if (!get_fd(env, args[0], "devFd", &dev_fd) || !get_integer(env, args[1], "backingId", 1, UINT32_MAX, &id64))
		return NULL;
	id = (uint32_t)id64;
	if (ioctl(dev_fd, TOCFS_FUSE_DEV_IOC_BACKING_CLOSE, &id) < 0)
		return throw_errno(env, errno, "ioctl", "%d, FUSE_DEV_IOC_BACKING_CLOSE, %u", dev_fd, id);
	NAPI_OR_THROW(env, napi_get_undefined(env, &result));
	return result;
}

/* ---- fd handover ---- */

static napi_value js_listen_unix(napi_env env, napi_callback_info info)
{
	napi_value args[1], result = NULL;
	struct sockaddr_un addr;
	socklen_t addr_length;
	struct stat st;
	char *path;
	bool bound = false;
	int fd = -1;

	if (!get_args(env, info, 1, args))
		return throw_napi_failure(env, "N-API: napi_get_cb_info");
	if ((path = get_string(env, args[0], "path")) == NULL)
		return NULL;
	if (!unix_address(path, false, &addr, &addr_length)) {
		throw_errno(env, ENAMETOOLONG, "bind", "%s", path);
		goto out;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		throw_errno(env, errno, "socket", "AF_UNIX, SOCK_STREAM");
		goto out;
	}
	/* Only a socket left behind is stale; anything else there makes bind() fail with EADDRINUSE. */
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode) && unlink(path) != 0 && errno != ENOENT) {
		throw_errno(env, errno, "unlink", "%s", path);
		goto out;
	}
	if (bind(fd, (struct sockaddr *)&addr, addr_length) != 0) {
		throw_errno(env, errno, "bind", "%s", path);
		goto out;
	}
	bound = true;
	/* Nobody can connect before listen(), so the mode is right before the first connection. */
	if (chmod(path, 0600) != 0) {
		throw_errno(env, errno, "chmod", "%s, 0600", path);
		goto out;
	}
	if (listen(fd, 8) != 0) {
		throw_errno(env, errno, "listen", "%s", path);
		goto out;
	}
	if (napi_create_int32(env, fd, &result) != napi_ok) {
		result = throw_napi_failure(env, "N-API: napi_create_int32");
		goto out;
	}
	fd = -1;
	bound = false;
out:
	if (bound)
		unlink(path);
	if (fd >= 0)
		close(fd);
	free(path);
	return result;
}

static int64_t monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* 1 when fd is readable (or hung up), 0 after timeout_ms, -1 with errno. */
static int wait_readable(int fd, int timeout_ms)
{
	int64_t deadline = monotonic_ms() + timeout_ms;
	struct pollfd p = { .fd = fd, .events = POLLIN };

	for (;;) {
		int64_t left = deadline - monotonic_ms();
		int rc = poll(&p, 1, left > 0 ? (int)left : 0);

		if (rc > 0)
			return 1;
		if (rc == 0)
			return 0;
		if (errno != EINTR)
			return -1;
	}
}

/* Closes every fd an SCM_RIGHTS message carried except the first one it keeps in *kept. */
static bool take_fds(struct msghdr *msg, int *kept)
{
	struct cmsghdr *c;
	bool ok = true;

	for (c = CMSG_FIRSTHDR(msg); c != NULL; c = CMSG_NXTHDR(msg, c)) {
		size_t count, i;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (i = 0; i < count; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
			if (*kept < 0) {
				*kept = fd;
			} else {
				close(fd);
				ok = false;
			}
		}
	}
	return ok;
}

/*
 * Reads from the connected socket `conn` until EOF: the payload and the one descriptor attached
 * to it, as { fd, payload }. `timeout` bounds each wait for more bytes, so a large payload that
 * keeps coming is fine. Throws (returns NULL) on anything else.
 */
static napi_value receive_fd(napi_env env, int conn, int timeout)
{
	napi_value result = NULL, fd_value, payload_value;
	int received = -1, rc;
	char *payload = NULL;
	size_t length = 0, capacity = 0;
	bool one_fd = true;
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * HANDOVER_MAX_FDS)];
	} control;

	for (;;) {
		struct iovec iov;
		struct msghdr msg;
		ssize_t n;

		if (capacity - length < HANDOVER_CHUNK) {
			size_t grown = capacity == 0 ? HANDOVER_CHUNK * 2 : capacity * 2;
			char *p;

			if (grown > HANDOVER_PAYLOAD_MAX) {
				throw_errno(env, EMSGSIZE, "recvmsg", "fd %d: payload over %zu bytes", conn, HANDOVER_PAYLOAD_MAX);
				goto out;
			}
			p = realloc(payload, grown);
			if (p == NULL) {
				throw_errno(env, ENOMEM, "realloc", "%zu-byte payload", grown);
				goto out;
			}
			payload = p;
			capacity = grown;
		}
		rc = wait_readable(conn, timeout);
		if (rc < 0) {
			throw_errno(env, errno, "poll", "connection fd %d", conn);
			goto out;
		}
		if (rc == 0) {
			throw_errno(env, ETIMEDOUT, "recvmsg", "fd %d: no bytes for %d ms after %zu", conn, timeout, length);
			goto out;
		}
		iov.iov_base = payload + length;
		iov.iov_len = capacity - length;
		memset(&msg, 0, sizeof msg);
		msg.msg_iov = &iov;
		msg.msg_iovlen = 1;
		msg.msg_control = control.buf;
		msg.msg_controllen = sizeof control.buf;
		n = recvmsg(conn, &msg, MSG_CMSG_CLOEXEC);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
				continue;
			throw_errno(env, errno, "recvmsg", "fd %d", conn);
			goto out;
		}
		if (!take_fds(&msg, &received) || (msg.msg_flags & MSG_CTRUNC))
			one_fd = false;
		if (n == 0)
			break;
		length += (size_t)n;
	}
	if (!one_fd) {
		throw_errno(env, EPROTO, "recvmsg", "fd %d: the sender attached more than one file descriptor", conn);
		goto out;
	}
	if (received < 0) {
		throw_errno(env, EPROTO, "recvmsg", "fd %d: the sender attached no file descriptor", conn);
		goto out;
	}
	if (napi_create_object(env, &result) != napi_ok || napi_create_int32(env, received, &fd_value) != napi_ok ||
	    napi_create_buffer_copy(env, length, payload, NULL, &payload_value) != napi_ok ||
	    napi_set_named_property(env, result, "fd", fd_value) != napi_ok ||
	    napi_set_named_property(env, result, "payload", payload_value) != napi_ok) {
		result = throw_napi_failure(env, "N-API: received fd result");
		goto out;
	}
	received = -1;
out:
	if (received >= 0)
		close(received);
	free(payload);
	return result;
}

static napi_value js_accept_fd(napi_env env, napi_callback_info info)
{
	napi_value args[2], result;
	int listen_fd, conn = -1, rc;
	int64_t timeout64, deadline;
	int timeout;

	if (!get_args(env, info, 2, args))
		return throw_napi_failure(env, "N-API: napi_get_cb_info");
	if (!get_fd(env, args[0], "listenFd", &listen_fd) ||
	    !get_integer(env, args[1], "timeoutMs", 0, INT_MAX, &timeout64))
		return NULL;
	timeout = (int)timeout64;

	deadline = monotonic_ms() + timeout;
	while (conn < 0) {
		int64_t left = deadline - monotonic_ms();

		rc = wait_readable(listen_fd, left > 0 ? (int)left : 0);
		if (rc < 0)
			return throw_errno(env, errno, "poll", "listening fd %d", listen_fd);
		if (rc == 0)
			return throw_errno(env, ETIMEDOUT, "accept", "fd %d: nobody connected within %d ms", listen_fd, timeout);
		conn = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (conn < 0 && errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK && errno != ECONNABORTED)
			return throw_errno(env, errno, "accept", "fd %d", listen_fd);
	}
	result = receive_fd(env, conn, timeout);
	close(conn);
	return result;
}

/* receiveFd(socketFd, timeoutMs): { fd, payload } from a connected socket, up to its EOF (fusermount's _FUSE_COMMFD). */
static napi_value js_receive_fd(napi_env env, napi_callback_info info)
{
	napi_value args[2];
	int sock;
	int64_t timeout64;

	if (!get_args(env, info, 2, args))
		return throw_napi_failure(env, "N-API: napi_get_cb_info");
	if (!get_fd(env, args[0], "socketFd", &sock) || !get_integer(env, args[1], "timeoutMs", 0, INT_MAX, &timeout64))
		return NULL;
	return receive_fd(env, sock, (int)timeout64);
}

/* socketPair(): two connected Unix stream sockets, both close-on-exec. */
static napi_value js_socket_pair(napi_env env, napi_callback_info info)
{
	napi_value result, a, b;
	int fds[2];

	(void)info;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
		return throw_errno(env, errno, "socketpair", "AF_UNIX, SOCK_STREAM");
	if (napi_create_array_with_length(env, 2, &result) != napi_ok || napi_create_int32(env, fds[0], &a) != napi_ok ||
	    napi_create_int32(env, fds[1], &b) != napi_ok || napi_set_element(env, result, 0, a) != napi_ok ||
	    napi_set_element(env, result, 1, b) != napi_ok) {
		close(fds[0]);
		close(fds[1]);
		return throw_napi_failure(env, "N-API: socketPair result");
	}
	return result;
}

/* Room for one SCM_RIGHTS descriptor, aligned as a cmsghdr must be. */
union fd_control {
	struct cmsghdr align;
	char buf[CMSG_SPACE(sizeof(int))];
};

/* Attaches `fd` to `msg` as its one SCM_RIGHTS control message, in `control`. */
static void attach_fd(struct msghdr *msg, union fd_control *control, int fd)
{
	struct cmsghdr *c;

	memset(control, 0, sizeof *control);
	msg->msg_control = control->buf;
	msg->msg_controllen = sizeof control->buf;
	c = CMSG_FIRSTHDR(msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof fd);
}

static napi_value js_send_fd(napi_env env, napi_callback_info info)
{
	napi_value args[3], result = NULL;
	struct sockaddr_un addr;
	socklen_t addr_length;
	char *path;
	void *data;
	size_t length, sent = 0;
	int fd, sock = -1;
	union fd_control control;

	if (!get_args(env, info, 3, args))
		return throw_napi_failure(env, "N-API: napi_get_cb_info");
	if ((path = get_string(env, args[0], "path")) == NULL)
		return NULL;
	if (!get_fd(env, args[1], "fd", &fd) || !get_buffer(env, args[2], "payload", &data, &length))
		goto out;
	if (length == 0) {
		throw_type_error(env, "payload must not be empty: the fd travels with its first byte");
		goto out;
	}
	if (!unix_address(path, false, &addr, &addr_length)) {
		throw_errno(env, ENAMETOOLONG, "connect", "%s", path);
		goto out;
	}
	sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (sock < 0) {
		throw_errno(env, errno, "socket", "AF_UNIX, SOCK_STREAM");
		goto out;
	}
	if (connect(sock, (struct sockaddr *)&addr, addr_length) != 0) {
		throw_errno(env, errno, "connect", "%s", path);
		goto out;
	}
	while (sent < length) {
		struct iovec iov = { .iov_base = (char *)data + sent, .iov_len = length - sent };
		struct msghdr msg;
		ssize_t n;

		memset(&msg, 0, sizeof msg);
		msg.msg_iov = &iov;
		msg.msg_iovlen = 1;
		if (sent == 0)
			attach_fd(&msg, &control, fd);
		n = sendmsg(sock, &msg, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			throw_errno(env, errno, "sendmsg", "%s, %zu of %zu bytes sent", path, sent, length);
			goto out;
		}
		sent += (size_t)n;
	}
	if (shutdown(sock, SHUT_WR) != 0) {
		throw_errno(env, errno, "shutdown", "%s", path);
		goto out;
	}
	/* Everything is queued for the receiver; close() of a socket has nothing left to report. */
	close(sock);
	sock = -1;
	if (napi_get_undefined(env, &result) != napi_ok)
		result = throw_napi_failure(env, "N-API: napi_get_undefined");
out:
	if (sock >= 0)
		close(sock);
	free(path);
	return result;
}

static napi_value js_notify_fd_store(napi_env env, napi_callback_info info)
{
	napi_value args[3], result = NULL;
	struct sockaddr_un addr;
	socklen_t addr_length;
	char *socket_path = NULL, *message = NULL;
	struct iovec iov;
	struct msghdr msg;
	int fd, sock = -1;
	ssize_t n;
	union fd_control control;
	napi_valuetype fd_type;

	if (!get_args(env, info, 3, args))
		return throw_napi_failure(env, "N-API: napi_get_cb_info");
	if ((socket_path = get_string(env, args[0], "notifySocket")) == NULL ||
	    (message = get_string(env, args[1], "message")) == NULL)
		goto out;
	/* null: a message without a descriptor (FDSTOREREMOVE=1). */
	if (napi_typeof(env, args[2], &fd_type) != napi_ok) {
		throw_napi_failure(env, "N-API: napi_typeof");
		goto out;
	}
	if (fd_type == napi_null)
		fd = -1;
	else if (!get_fd(env, args[2], "fd", &fd))
		goto out;
	if (message[0] == '\0') {
		throw_type_error(env, "message must not be empty");
		goto out;
	}
	if ((socket_path[0] != '/' && socket_path[0] != '@') || !unix_address(socket_path, true, &addr, &addr_length)) {
		throw_errno(env, EINVAL, "sendmsg", "NOTIFY_SOCKET=%s: not an absolute path or @abstract name that fits", socket_path);
		goto out;
	}
	sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (sock < 0) {
		throw_errno(env, errno, "socket", "AF_UNIX, SOCK_DGRAM");
		goto out;
	}
	iov.iov_base = message;
	iov.iov_len = strlen(message);
	memset(&msg, 0, sizeof msg);
	msg.msg_name = &addr;
	msg.msg_namelen = addr_length;
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	if (fd >= 0)
		attach_fd(&msg, &control, fd);
	do
		n = sendmsg(sock, &msg, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		throw_errno(env, errno, "sendmsg", "NOTIFY_SOCKET=%s", socket_path);
		goto out;
	}
	if (napi_get_undefined(env, &result) != napi_ok)
		result = throw_napi_failure(env, "N-API: napi_get_undefined");
out:
	if (sock >= 0)
		close(sock);
	free(message);
	free(socket_path);
	return result;
}

/* ---- glibc malloc ---- */

/* limitMallocArenas(n): mallopt(M_ARENA_MAX, n); true when glibc took it. */
static napi_value js_limit_malloc_arenas(napi_env env, napi_callback_info info)
{
	napi_value args[1], result;
	int64_t n;

	if (!get_args(env, info, 1, args))
		return throw_napi_failure(env, "N-API: napi_get_cb_info");
	if (!get_integer(env, args[0], "n", 1, INT_MAX, &n))
		return NULL;
	NAPI_OR_THROW(env, napi_get_boolean(env, mallopt(M_ARENA_MAX, (int)n) == 1, &result));
	return result;
}

/*
 * setMallocMmapThreshold(bytes): mallopt(M_MMAP_THRESHOLD, bytes); true when glibc took it.
 * Also ends glibc's sliding threshold, which rises to the size of each mapped block freed, so
 * that every later block up to 32 MiB comes from the arenas and stays there.
 */
static napi_value js_set_malloc_mmap_threshold(napi_env env, napi_callback_info info)
{
	napi_value args[1], result;
	int64_t n;

	if (!get_args(env, info, 1, args))
		return throw_napi_failure(env, "N-API: napi_get_cb_info");
	if (!get_integer(env, args[0], "bytes", 4096, 32 * 1024 * 1024, &n))
		return NULL;
	NAPI_OR_THROW(env, napi_get_boolean(env, mallopt(M_MMAP_THRESHOLD, (int)n) == 1, &result));
	return result;
}

/* mallocFreeBytes(): free bytes glibc holds in its arenas (mallinfo2: fordblks). */
static napi_value js_malloc_free_bytes(napi_env env, napi_callback_info info)
{
	napi_value result;
	struct mallinfo2 mi = mallinfo2();

	(void)info;
	NAPI_OR_THROW(env, napi_create_double(env, (double)mi.fordblks, &result));
	return result;
}

/* mallocTrim(): malloc_trim(0); true when memory was given back. */
static napi_value js_malloc_trim(napi_env env, napi_callback_info info)
{
	napi_value result;

	(void)info;
	NAPI_OR_THROW(env, napi_get_boolean(env, malloc_trim(0) == 1, &result));
	return result;
}

/* ---- module ---- */

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */)
{
	napi_value version;
	napi_property_descriptor properties[] = {
		{ "version", NULL, NULL, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "mount", NULL, js_mount, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "unmount", NULL, js_unmount, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "startReading", NULL, js_start_reading, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "write", NULL, js_write, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "backingOpen", NULL, js_backing_open, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "backingClose", NULL, js_backing_close, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "listenUnix", NULL, js_listen_unix, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "acceptFd", NULL, js_accept_fd, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "sendFd", NULL, js_send_fd, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "notifyFdStore", NULL, js_notify_fd_store, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "receiveFd", NULL, js_receive_fd, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "socketPair", NULL, js_socket_pair, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "limitMallocArenas", NULL, js_limit_malloc_arenas, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "setMallocMmapThreshold", NULL, js_set_malloc_mmap_threshold, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "mallocTrim", NULL, js_malloc_trim, NULL, NULL, NULL, napi_enumerable, NULL },
		{ "mallocFreeBytes", NULL, js_malloc_free_bytes, NULL, NULL, NULL, napi_enumerable, NULL },
	};

	if (napi_create_int32(env, ADDON_VERSION, &version) != napi_ok)
		return NULL;
	properties[0].value = version;
	if (napi_define_properties(env, exports, sizeof properties / sizeof properties[0], properties) != napi_ok)
		return NULL;
	return exports;
}
