# The gradient family against Captum, and its properties (check_grad.py, grad_props.py).
foreach(model resnet18 vgg11_bn mobilenet_v2)
  attrib_test(grad_${model} check_grad.py ${model})
endforeach()
attrib_test(grad_properties grad_props.py)
