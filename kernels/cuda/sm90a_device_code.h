// LL_SM90A_DEVICE_CODE: 1 where the Hopper instructions may be compiled (the sm_90a device
// pass, where nvcc defines __CUDA_ARCH_FEAT_SM90_ALL, or the SIMT emulator), else 0 (the host
// pass, sm_80, and plain sm_90: same __CUDA_ARCH__ 900, but no wgmma or bulk tensor copies).
// The Hopper kernels guard their bodies with it and the probe kernel of
// attention_device_support.cu reports it. No include guard, no includes: a test includes it
// again under other macros (tests/kernels/cuda/test_sm90a_device_code.cpp).
#undef LL_SM90A_DEVICE_CODE
#if defined(LL_SIMT_EMULATOR_DEVICE_CODE) || \
    (defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL))
#define LL_SM90A_DEVICE_CODE 1
#else
#define LL_SM90A_DEVICE_CODE 0
#endif
