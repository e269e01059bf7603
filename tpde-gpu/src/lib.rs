//! tpde-gpu: decode `.tpde` chunks into device buffers (work in progress).
