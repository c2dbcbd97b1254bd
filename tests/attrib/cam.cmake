# The CAM family (check_cam.py): pytorch-grad-cam and Captum oracles per fixture model,
# cam against the classifier weights, and the layer errors and default layer.
foreach(model resnet18 vgg11_bn mobilenet_v2)
  attrib_test(cam_${model} check_cam.py ${model})
endforeach()
attrib_test(cam_errors check_cam.py errors)
