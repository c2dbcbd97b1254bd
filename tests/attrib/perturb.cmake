# The input-modification family (check_perturb.py): occlusion against Captum on every
# fixture model, rise's formula with fixed masks, and properties on tiny models.
foreach(model resnet18 vgg11_bn mobilenet_v2)
  attrib_test(perturb_occlusion_${model} check_perturb.py occlusion ${model})
endforeach()
foreach(model resnet18 mobilenet_v2)
  attrib_test(perturb_rise_${model} check_perturb.py rise ${model})
endforeach()
attrib_test(perturb_properties check_perturb.py props)
