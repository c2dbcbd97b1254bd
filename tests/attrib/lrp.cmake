# LRP and DeepLift against zennit and Captum, and their properties (check_lrp.py).
foreach(model resnet18 vgg11_bn mobilenet_v2)
  attrib_test(lrp_${model} check_lrp.py ${model})
endforeach()
attrib_test(lrp_properties check_lrp.py props)
