# The CUDA backend on the CPU emulator (-DLOUPE_CUDA_EMU=ON): engine/cuda/*.c as C
# against tests/emu/include's CUDA, cuDNN and cuBLAS headers, kernels/*.cu rewritten
# by cu2cpp.py and compiled as C++ with the emulated kernel language.
enable_language(CXX)
set(CMAKE_CXX_STANDARD 17)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
find_package(Python3 REQUIRED COMPONENTS Interpreter)
set(_emu_dir ${CMAKE_SOURCE_DIR}/tests/emu)
add_library(loupe_cuda_emu STATIC ${_emu_dir}/emu_runtime.cpp ${_emu_dir}/emu_dnn.cpp ${_emu_dir}/emu_blas.cpp)
target_include_directories(loupe_cuda_emu PUBLIC ${_emu_dir}/include)
target_link_libraries(loupe_cuda_emu PUBLIC PkgConfig::OPENBLAS)
# IEEE float as the GPU's _rn arithmetic: no contraction into FMAs.
target_compile_options(loupe_cuda_emu PRIVATE -ffp-contract=off)

file(GLOB LOUPE_CUDA_HOST CONFIGURE_DEPENDS engine/cuda/*.c)
file(GLOB _emu_cu CONFIGURE_DEPENDS kernels/*.cu)
set(_emu_cpp)
foreach(cu ${_emu_cu})
  get_filename_component(name ${cu} NAME_WE)
  set(out ${CMAKE_BINARY_DIR}/emu_kernels/${name}.cpp)
  add_custom_command(OUTPUT ${out}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_BINARY_DIR}/emu_kernels
    COMMAND Python3::Interpreter ${_emu_dir}/cu2cpp.py ${cu} ${out}
    DEPENDS ${cu} ${_emu_dir}/cu2cpp.py
    COMMENT "Rewriting ${name}.cu for the CUDA emulator")
  list(APPEND _emu_cpp ${out})
endforeach()
set_source_files_properties(${_emu_cpp} PROPERTIES COMPILE_OPTIONS "-ffp-contract=off;-Wno-unused-parameter"
  INCLUDE_DIRECTORIES ${CMAKE_SOURCE_DIR}/kernels)
target_sources(loupe PRIVATE ${LOUPE_CUDA_HOST} ${_emu_cpp})
target_compile_definitions(loupe PUBLIC LOUPE_HAVE_CUDA=1 LOUPE_CUDA_EMU=1)
target_link_libraries(loupe PUBLIC loupe_cuda_emu)

# The emulator's run order (LOUPE_EMU_ORDER): each order as it says, barriers kept,
# and a race without its barrier seen in every order but forward.
add_custom_command(OUTPUT ${CMAKE_BINARY_DIR}/emu_kernels/emu_order_test.cpp
  COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_BINARY_DIR}/emu_kernels
  COMMAND Python3::Interpreter ${_emu_dir}/cu2cpp.py ${_emu_dir}/emu_order_test.cu
          ${CMAKE_BINARY_DIR}/emu_kernels/emu_order_test.cpp
  DEPENDS ${_emu_dir}/emu_order_test.cu ${_emu_dir}/cu2cpp.py)
add_executable(emu_order_test ${CMAKE_BINARY_DIR}/emu_kernels/emu_order_test.cpp)
target_link_libraries(emu_order_test PRIVATE loupe_cuda_emu)
foreach(order forward reverse shuffle)
  add_test(NAME emu.order.${order} COMMAND emu_order_test ${order})
  set_tests_properties(emu.order.${order} PROPERTIES LABELS "emu" ENVIRONMENT "LOUPE_EMU_ORDER=${order}" TIMEOUT 30)
endforeach()
# A barrier (or warp exchange) that some threads of the block returned before must stop
# the emulator, naming the fault (it would hang or misbehave on a GPU): whether the
# return comes before the others wait (odd, run in reverse order: thread 63 returns
# before 62 waits) or after (high), and for a shuffle (warp).
foreach(how odd high warp)
  add_test(NAME emu.barrier_after_return.${how} COMMAND sh -c
    "ulimit -c 0; out=$($<TARGET_FILE:emu_order_test> barrier-after-return:${how} 2>&1); rc=$?; echo \"$out\"; [ $rc -ne 0 ] && echo \"$out\" | grep -q 'returned'")
  set_tests_properties(emu.barrier_after_return.${how} PROPERTIES LABELS "emu" TIMEOUT 30)
endforeach()
set_tests_properties(emu.barrier_after_return.odd PROPERTIES ENVIRONMENT "LOUPE_EMU_ORDER=reverse")
