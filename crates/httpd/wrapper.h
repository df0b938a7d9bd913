/* The parts of Apache httpd 2.4 and APR that the module uses; bindgen turns them into src/ffi.rs's bindings. */
#include <httpd.h>
#include <http_config.h>
#include <http_core.h>
#include <http_log.h>
#include <http_protocol.h>
#include <http_request.h>
#include <http_main.h>
#include <ap_mpm.h>
#include <util_script.h>
#include <apr_strings.h>
#include <apr_buckets.h>
#include <apr_file_io.h>
#include <apr_portable.h>
#include <mod_auth.h>
#include <http_ssl.h>
#include <unixd.h>
#include <ap_listen.h>
