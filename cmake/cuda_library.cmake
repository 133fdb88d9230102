# The kernels layer's CUDA half: ll_cuda (kernels/cuda, the CUDA backend; links ll_kernels for
# the Backend interface and its shape checks), and the SIMT emulator (tests/cuda_emu), a test
# instrument that runs the kernels' device code on the CPU.

# The SIMT emulator needs the toolkit's headers only; always optimized (emulated kernels are
# slow enough as it is). Device code carries #pragma unroll, which host compilers do not know,
# and type-puns as nvcc allows (see cuda_prelude.h): no strict aliasing.
if(LL_HAVE_SIMT_EMULATOR)
  file(GLOB ll_emulator_sources CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/tests/cuda_emu/*.cpp)
  list(FILTER ll_emulator_sources EXCLUDE REGEX "/test_[^/]*\\.cpp$")
  add_library(ll_simt_emulator STATIC ${ll_emulator_sources})
  target_include_directories(ll_simt_emulator PUBLIC ${PROJECT_SOURCE_DIR})
  target_include_directories(ll_simt_emulator SYSTEM PUBLIC ${CUDAToolkit_INCLUDE_DIRS})
  target_compile_options(ll_simt_emulator PRIVATE ${LL_WARNINGS} -Wno-unknown-pragmas -O2)
  target_compile_options(ll_simt_emulator PUBLIC -fno-strict-aliasing)
  target_link_libraries(ll_simt_emulator PUBLIC ll_kernels fmt::fmt)
  target_compile_definitions(ll_simt_emulator PUBLIC LL_HAVE_SIMT_EMULATOR=1)
endif()

if(NOT LL_HAVE_CUDA)
  return()
endif()
file(GLOB ll_cuda_sources CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/kernels/cuda/*.cu
  ${PROJECT_SOURCE_DIR}/kernels/cuda/*.cpp)
if(LL_CUDA_BACKEND_EMULATED)
  # The .cu files as C++ with the emulator's prelude first; the runtime and cuBLASLt are the
  # host stand-ins in tests/cuda_emu/fake.
  set(ll_cu_sources ${ll_cuda_sources})
  list(FILTER ll_cu_sources INCLUDE REGEX "\\.cu$")
  set_source_files_properties(${ll_cu_sources} PROPERTIES LANGUAGE CXX COMPILE_OPTIONS
    "-xc++;-include;${PROJECT_SOURCE_DIR}/tests/cuda_emu/cuda_prelude.h;-Wno-unknown-pragmas;-fno-strict-aliasing")
  file(GLOB ll_fake_sources CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/tests/cuda_emu/fake/*.cpp)
  list(FILTER ll_fake_sources EXCLUDE REGEX "/test_[^/]*\\.cpp$")
  list(APPEND ll_cuda_sources ${ll_fake_sources})
endif()
add_library(ll_cuda STATIC ${ll_cuda_sources})
target_include_directories(ll_cuda PUBLIC ${PROJECT_SOURCE_DIR})
# Warnings as errors in device and host code; ptxas reports resources so spills are visible.
target_compile_options(ll_cuda PRIVATE
  $<$<COMPILE_LANGUAGE:CUDA>:--Werror=all-warnings -Xcompiler=-Wall,-Wextra,-Werror,-Wno-unused-parameter -Xptxas=-v,-warn-spills,-warn-lmem-usage --resource-usage>)
target_compile_options(ll_cuda PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${LL_WARNINGS}>)
target_compile_definitions(ll_cuda PUBLIC LL_HAVE_CUDA=1)
target_link_libraries(ll_cuda PUBLIC ll_kernels fmt::fmt)
if(LL_CUDA_BACKEND_EMULATED)
  target_include_directories(ll_cuda SYSTEM PUBLIC ${CUDAToolkit_INCLUDE_DIRS})
  target_compile_definitions(ll_cuda PUBLIC LL_CUDA_BACKEND_EMULATED=1)
  target_link_libraries(ll_cuda PUBLIC ll_simt_emulator)
else()
  target_link_libraries(ll_cuda PUBLIC CUDA::cudart CUDA::cublasLt)
endif()
