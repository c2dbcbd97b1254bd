/* emu_internal.h (Loupe's CUDA emulator) — what the runtime shares with the cuDNN and
 * cuBLAS emulations: device work submitted to a stream (run now, or recorded while
 * that stream is being captured), and device pointer checks. */
#ifndef LP_EMU_INTERNAL_H
#define LP_EMU_INTERNAL_H

#include <cuda_runtime.h>

#include <functional>

namespace lp_emu {
/* Runs op on the device (device memory readable while it runs), or records it when
 * `stream` is capturing. Returns the error a real stream would give. */
cudaError_t submit(void *stream, std::function<void()> op);
/* Whether [p, p + bytes) lies inside one live device allocation; if not, says so on
 * stderr, naming `who`. */
bool device_range(const void *p, size_t bytes, const char *who);
/* Whether a stream capture is under way. */
bool capturing();
/* Whether the environment's on/off switch `name` is on ("1"). */
bool knob(const char *name);
/* Round a float to TF32 (10 mantissa bits, nearest even), as tensor cores read it. */
float tf32(float v);
float bf16_to_float(uint16_t h);
uint16_t float_to_bf16(float v);
} // namespace lp_emu

#endif
